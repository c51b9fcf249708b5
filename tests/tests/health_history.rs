//! Health over time and operations on all tenants: history (ranges checked,
//! long ones downsampled, minutes kept across a restart), the dashboard,
//! check-all, the report and cleanup.

use std::time::Duration;

use knowton_tests::feed::{Feed, Shape, healthy};
use knowton_tests::{Db, TestCoordinator, eventually, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::Value;

on_every_backend!(db:
    history_dashboard_report_and_cleanup,
    check_all_asks_agents_and_reports_every_tenant,
);

const WAIT: Duration = Duration::from_secs(20);

async fn tenant_get(kt: &TestCoordinator, path: &str, slug: &str) -> (StatusCode, Value) {
    let response = kt
        .http
        .get(kt.url(path))
        .bearer_auth(knowton_tests::ADMIN_TOKEN)
        .header("X-Tenant-Slug", slug)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn history_dashboard_report_and_cleanup(db: Db) {
    let kt = TestCoordinator::start(db).await;
    kt.provision("acme", "professional").await;
    let mut feed = Feed::new(&kt, "node-a");
    feed.send(vec![healthy("acme", "web-0").slow(1500)]);
    let (_, history) = eventually(WAIT, "the minute in progress", || async {
        let (status, body) = tenant_get(&kt, "/api/v1/monitoring/health/history", "acme").await;
        (status == StatusCode::OK && body["points"].as_array().is_some_and(|p| !p.is_empty()))
            .then_some((status, body))
    })
    .await;
    let point = &history["points"][0];
    assert_eq!(point["status"], "warning", "{history}");
    assert_eq!(point["availability"], 1.0);
    assert!(point["latencyP95Ms"].as_f64().unwrap() >= 1500.0, "{point}");
    assert_eq!(history["resolutionSeconds"], 60);

    // Ranges: checked, and long ones downsampled rather than refused.
    for (query, field) in [
        ("startDate=2026-02-01&endDate=2026-01-01", "startDate"),
        ("startDate=yesterday", "startDate"),
        ("endDate=2026-13-01", "endDate"),
        ("from=2026-01-01", "from"),
    ] {
        let (status, body) = tenant_get(
            &kt,
            &format!("/api/v1/monitoring/health/history?{query}"),
            "acme",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let named = body["error"]["field"] == field
            || body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field);
        assert!(named, "{query}: {body}");
    }
    let (status, long) = tenant_get(
        &kt,
        "/api/v1/monitoring/health/history?startDate=2025-01-01&endDate=2099-01-01",
        "acme",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{long}");
    assert!(long["resolutionSeconds"].as_i64().unwrap() > 60, "{long}");
    assert_eq!(long["points"].as_array().unwrap().len(), 1, "{long}");
    let (status, _) = tenant_get(&kt, "/api/v1/monitoring/health/history", "nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let no_slug = kt
        .admin(Method::GET, "/api/v1/monitoring/health/history", None)
        .await;
    assert_eq!(no_slug.error(StatusCode::BAD_REQUEST).1, "X-Tenant-Slug");

    // The dashboard: status, checks against thresholds, usage against the plan, alerts.
    let (status, dash) = eventually(WAIT, "the dashboard with its alert", || async {
        let (status, body) = tenant_get(&kt, "/api/v1/monitoring/dashboard", "acme").await;
        (body["openAlerts"].as_array().is_some_and(|a| a.len() == 1)).then_some((status, body))
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dash["status"], "warning", "{dash}");
    assert_eq!(dash["plan"], "professional");
    assert_eq!(dash["checks"].as_array().unwrap().len(), 8, "{dash}");
    assert_eq!(dash["checks"][7]["check"], "backup", "{dash}");
    assert_eq!(dash["checks"][7]["state"], "ok", "{dash}");
    assert_eq!(dash["usage"]["users"]["limit"], 100.0);
    assert_eq!(dash["usage"]["storageBytes"]["used"], 1073741824.0);
    assert_eq!(dash["last24Hours"]["availability"], 1.0);
    assert_eq!(dash["last24Hours"]["alertsOpened"], 1);
    assert_eq!(dash["openAlerts"][0]["check"], "response_time");
    assert_eq!(dash["thresholds"]["responseTimeMs"]["warning"], 1000.0);

    // The minute in progress is stored on shutdown and read back after a restart.
    let (db, args) = kt.stop_for_restart().await;
    let kt = TestCoordinator::start_with(db, args).await;
    let (status, history) = tenant_get(&kt, "/api/v1/monitoring/health/history", "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["points"][0]["status"], "warning", "{history}");

    let report = kt
        .admin(Method::GET, "/api/v1/monitoring/report?hours=24", None)
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    let line = &report.body["tenants"][0];
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["availability"], 1.0);
    assert_eq!(line["alertsOpened"], 1);
    assert_eq!(line["alertsOpen"], 1);
    let bad = kt
        .admin(Method::GET, "/api/v1/monitoring/report?hours=0", None)
        .await;
    assert_eq!(bad.error(StatusCode::BAD_REQUEST).1, "hours");

    for bad in ["30", "30y", "-1d", "0h", "30m"] {
        let reply = kt
            .admin(
                Method::POST,
                &format!("/api/v1/monitoring/cleanup?olderThan={bad}"),
                None,
            )
            .await;
        assert_eq!(reply.error(StatusCode::BAD_REQUEST).1, "olderThan", "{bad}");
    }
    let kept = kt
        .admin(
            Method::POST,
            "/api/v1/monitoring/cleanup?olderThan=30d",
            None,
        )
        .await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.body);
    assert_eq!(kept.body["deleted"]["rollups"], 0, "nothing is that old");
    let rows_before = kt
        .db
        .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM health_rollups")
        .await
        .unwrap();
    assert_eq!(rows_before, "1");
    kt.stop().await;
}

async fn check_all_asks_agents_and_reports_every_tenant(db: Db) {
    let kt = TestCoordinator::start(db).await;
    kt.provision("acme", "basic").await;
    kt.provision("globex", "basic").await;
    let mut feed = Feed::new(&kt, "node-a");
    feed.send(vec![healthy("acme", "web-0").database_down()]);
    // This agent never answers a probe-now: check-all waits, then says so.
    let reply = kt
        .admin(
            Method::POST,
            "/api/v1/monitoring/check-all?timeoutSeconds=1",
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["agents"], 1);
    assert_eq!(reply.body["agentsAnswered"], 0);
    assert_eq!(reply.body["timedOut"], true);
    let tenants = reply.body["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 2);
    assert_eq!(tenants[0]["tenant"], "acme");
    assert_eq!(tenants[0]["status"], "critical");
    assert!(
        tenants[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("database unreachable"),
        "{}",
        reply.body
    );
    assert_eq!(tenants[1]["tenant"], "globex");
    assert_eq!(tenants[1]["status"], "unknown");

    let bad = kt
        .admin(
            Method::POST,
            "/api/v1/monitoring/check-all?timeoutSeconds=0",
            None,
        )
        .await;
    assert_eq!(bad.error(StatusCode::BAD_REQUEST).1, "timeoutSeconds");
    let key = kt.provision("initech", "basic").await["apiKeys"]["production"]
        .as_str()
        .unwrap()
        .to_owned();
    let forbidden = kt
        .call(
            Method::POST,
            "/api/v1/monitoring/check-all",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    kt.stop().await;
}
