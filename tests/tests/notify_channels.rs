//! A tenant's notification channels through the API: validation naming
//! the field, nothing changed by a refused request, secrets sealed at rest
//! and never shown, history, access; and the admin's outbox listing.

use knowton_tests::{ADMIN_TOKEN, TestCoordinator, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_every_backend!(
    channels_are_validated_sealed_and_shown_redacted,
    channels_follow_tenant_access_rules,
    the_outbox_listing_is_for_the_admin_and_pages,
);

const PATH: &str = "/api/v1/tenants/acme/notifications";
const WEBHOOK_PATH: &str = "/hooks/acme-private-path";
const SLACK_TOKEN: &str = "T0000/B0000/XXXXslacktokenXXXX";
const SECRET: &str = "a-webhook-secret-of-some-length";

async fn history_len(kt: &TestCoordinator) -> usize {
    kt.admin(Method::GET, "/api/v1/tenants/acme/config-history", None)
        .await
        .body["versions"]
        .as_array()
        .unwrap()
        .len()
}

async fn channels_are_validated_sealed_and_shown_redacted(kt: TestCoordinator) {
    kt.provision("acme", "basic").await;
    let default = kt.admin(Method::GET, PATH, None).await;
    assert_eq!(default.status, StatusCode::OK, "{}", default.body);
    let mut shown = default.body.clone();
    assert!(shown["updatedAt"].is_string(), "set at provisioning");
    shown.as_object_mut().unwrap().remove("updatedAt");
    assert_eq!(
        shown,
        json!({"emails": ["admin@acme.example.com"], "emailsDefault": true, "webhookSecretSet": false})
    );
    let history = kt
        .admin(Method::GET, "/api/v1/tenants/acme/config-history", None)
        .await;
    assert_eq!(
        history.body["versions"][0]["snapshot"]["notifications"],
        json!({"emails": null, "webhookUrl": null, "webhookSecretSet": false, "slackWebhookUrl": null}),
        "the defaults are part of version 1"
    );

    for (body, field) in [
        (
            json!({"emails": ["ok@example.com", "not-an-address"]}),
            "emails[1]",
        ),
        (json!({"emails": ["ok@example.com", 5]}), "emails[1]"),
        (json!({"emails": "ok@example.com"}), "emails"),
        (
            json!({"webhookUrl": "http://hooks.example.com/x"}),
            "webhookUrl",
        ),
        (json!({"webhookUrl": "ftp://127.0.0.1/x"}), "webhookUrl"),
        (
            json!({"slackWebhookUrl": "hooks.slack.com/services/x"}),
            "slackWebhookUrl",
        ),
        (json!({"webhookSecret": SECRET}), "webhookSecret"),
        (
            json!({"webhookUrl": "https://h.example.com/x", "webhookSecret": "short"}),
            "webhookSecret",
        ),
        (json!({"emails": [], "colour": "red"}), "colour"),
        (
            json!({"webhookUrl": ["https://h.example.com/x"]}),
            "webhookUrl",
        ),
    ] {
        let reply = kt.admin(Method::PUT, PATH, Some(body.clone())).await;
        let (code, named) = reply.error(StatusCode::BAD_REQUEST);
        assert_eq!(
            (code.as_str(), named.as_str()),
            ("invalid_field", field),
            "{body}"
        );
    }
    assert_eq!(
        kt.admin(Method::GET, PATH, None).await.body,
        default.body,
        "nothing changed"
    );
    assert_eq!(history_len(&kt).await, 1);

    let webhook = format!(
        "https://hooks.example.com:8443/{}?token=abc",
        &WEBHOOK_PATH[1..]
    );
    let slack = format!("https://hooks.slack.com/services/{SLACK_TOKEN}");
    let put = kt
        .admin(
            Method::PUT,
            PATH,
            Some(json!({
                "emails": ["Ops@Acme.example.com", "ops@acme.example.com", "cto@acme.example.com"],
                "webhookUrl": webhook,
                "webhookSecret": SECRET,
                "slackWebhookUrl": slack,
            })),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(
        put.body["emails"],
        json!(["Ops@acme.example.com", "cto@acme.example.com"])
    );
    assert_eq!(put.body["emailsDefault"], false);
    assert_eq!(put.body["webhookUrl"], "https://hooks.example.com:8443/…");
    assert_eq!(put.body["webhookSecretSet"], true);
    assert_eq!(put.body["slackWebhookUrl"], "https://hooks.slack.com/…");
    assert!(put.body["updatedAt"].is_string());
    let got = kt.admin(Method::GET, PATH, None).await;
    assert_eq!(got.body, put.body);

    // Recorded as a configuration version, redacted.
    let history = kt
        .admin(Method::GET, "/api/v1/tenants/acme/config-history", None)
        .await;
    let versions = history.body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        versions[1]["change"],
        "notification channels: emails, webhook, slack"
    );
    assert_eq!(versions[1]["actor"], "admin");
    assert_eq!(
        versions[1]["snapshot"]["notifications"]["webhookSecretSet"],
        true
    );
    assert_eq!(versions[1]["snapshot"]["plan"], "basic");
    let tenant = kt.admin(Method::GET, "/api/v1/tenants/acme", None).await;
    assert_eq!(tenant.body["configVersion"], 2);

    // The same again changes nothing; a later plan change keeps the channels
    // in its snapshot.
    let again = kt
        .admin(
            Method::PUT,
            PATH,
            Some(json!({
                "emails": ["Ops@acme.example.com", "cto@acme.example.com"],
                "webhookUrl": webhook, "webhookSecret": SECRET, "slackWebhookUrl": slack,
            })),
        )
        .await;
    assert_eq!(again.body, put.body);
    assert_eq!(history_len(&kt).await, 2);
    let upgraded = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "professional"})),
        )
        .await;
    assert_eq!(upgraded.status, StatusCode::OK);
    let history = kt
        .admin(Method::GET, "/api/v1/tenants/acme/config-history", None)
        .await;
    assert_eq!(
        history.body["versions"][2]["snapshot"]["notifications"]["slackWebhookUrl"],
        "https://hooks.slack.com/…"
    );

    // Never in the clear: not in any column, nor in any response.
    let shown = format!("{} {} {}", put.body, got.body, history.body);
    let values = kt.db.every_value().await;
    for secret in [SECRET, SLACK_TOKEN, &WEBHOOK_PATH[1..], "token=abc"] {
        assert!(!shown.contains(secret), "{secret} shown");
        for (table, column, value) in &values {
            assert!(!value.contains(secret), "{secret} in {table}.{column}");
        }
    }

    // Back to the defaults.
    let cleared = kt.admin(Method::PUT, PATH, Some(json!({}))).await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.body["emails"], json!(["admin@acme.example.com"]));
    assert_eq!(cleared.body["emailsDefault"], true);
    assert!(
        cleared.body.get("webhookUrl").is_none() && cleared.body.get("slackWebhookUrl").is_none()
    );
}

async fn channels_follow_tenant_access_rules(kt: TestCoordinator) {
    let acme = kt.provision("acme", "basic").await;
    let globex = kt.provision("globex", "basic").await;
    let acme_key = acme["apiKeys"]["production"].as_str().unwrap();
    let globex_key = globex["apiKeys"]["production"].as_str().unwrap();
    let body = json!({"emails": ["ops@acme.example.com"]});

    let own = kt
        .call(Method::PUT, PATH, Some(acme_key), Some(body.clone()))
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let own = kt.call(Method::GET, PATH, Some(acme_key), None).await;
    assert_eq!(own.body["emails"], json!(["ops@acme.example.com"]));
    let history = kt
        .admin(Method::GET, "/api/v1/tenants/acme/config-history", None)
        .await;
    assert!(
        history.body["versions"][1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("tenant-key:")
    );

    for method in [Method::GET, Method::PUT] {
        let other = kt
            .call(method, PATH, Some(globex_key), Some(body.clone()))
            .await;
        assert_eq!(other.error(StatusCode::FORBIDDEN).0, "forbidden");
    }
    let unknown = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/nobody/notifications",
            Some(body.clone()),
        )
        .await;
    assert_eq!(unknown.error(StatusCode::NOT_FOUND).0, "tenant_not_found");
    let unknown = kt
        .admin(Method::GET, "/api/v1/tenants/nobody/notifications", None)
        .await;
    assert_eq!(unknown.error(StatusCode::NOT_FOUND).0, "tenant_not_found");

    let gone = kt
        .admin(Method::DELETE, "/api/v1/tenants/globex", None)
        .await;
    assert_eq!(gone.status, StatusCode::OK);
    let refused = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/globex/notifications",
            Some(body),
        )
        .await;
    assert_eq!(
        refused.error(StatusCode::CONFLICT).0,
        "tenant_deprovisioned"
    );
}

async fn the_outbox_listing_is_for_the_admin_and_pages(kt: TestCoordinator) {
    let mut provisioned = Vec::new();
    for slug in ["acme", "globex", "initech"] {
        provisioned.push(kt.provision(slug, "basic").await);
    }
    let key = provisioned[0]["apiKeys"]["production"].as_str().unwrap();
    let tenant = kt
        .call(
            Method::GET,
            "/api/v1/monitoring/notifications",
            Some(key),
            None,
        )
        .await;
    assert_eq!(tenant.error(StatusCode::FORBIDDEN).0, "admin_required");
    for query in [
        "state=lost",
        "limit=0",
        "limit=201",
        "cursor=nope",
        "color=red",
    ] {
        let bad = kt
            .admin(
                Method::GET,
                &format!("/api/v1/monitoring/notifications?{query}"),
                None,
            )
            .await;
        bad.error(StatusCode::BAD_REQUEST);
    }

    // Three welcome e-mails, waiting for an SMTP server: a page at a time.
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/monitoring/notifications?state=pending&limit=2&cursor={c}"),
            None => "/api/v1/monitoring/notifications?state=pending&limit=2".to_owned(),
        };
        let page = kt.call(Method::GET, &path, Some(ADMIN_TOKEN), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        seen.extend(
            page.body["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        match page.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let tenants: Vec<&str> = seen.iter().map(|n| n["tenant"].as_str().unwrap()).collect();
    assert_eq!(
        tenants,
        ["acme", "globex", "initech"],
        "oldest first, each once"
    );
    for (row, created) in seen.iter().zip(&provisioned) {
        assert_eq!(row["kind"], "welcome");
        assert_eq!(row["channel"], "email");
        assert_eq!(row["state"], "pending");
        assert_eq!(row["lastError"], "no SMTP server configured (--smtp-url)");
        let password = created["admin"]["temporaryPassword"].as_str().unwrap();
        assert!(!row.to_string().contains(password), "never the body");
    }
    assert!(kt.notifications("state=failed").await.is_empty());
    assert!(kt.notifications("state=delivered").await.is_empty());
    assert_eq!(kt.notifications("").await.len(), 3);
}
