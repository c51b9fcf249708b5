//! `GET /metrics`: the families operators graph, with bounded labels, in a
//! format `promtool check metrics` accepts.

use std::time::Duration;

use knowton_tests::feed::{Feed, Shape, healthy};
use knowton_tests::promtool::promtool;
use knowton_tests::{Db, TestCoordinator, eventually, on_every_backend};
use reqwest::{Method, StatusCode};

on_every_backend!(db: metrics_show_every_tenant_and_pass_promtool);

async fn scrape(kt: &TestCoordinator) -> String {
    let response = kt
        .http
        .get(kt.url("/metrics"))
        .bearer_auth(knowton_tests::METRICS_TOKEN)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

async fn metrics_show_every_tenant_and_pass_promtool(db: Db) {
    let kt = TestCoordinator::start(db).await;
    kt.provision("acme", "basic").await;
    kt.provision("globex", "enterprise").await;
    let mut feed = Feed::new(&kt, "node-a");
    feed.send(vec![
        healthy("acme", "acme-web-0").slow(2500),
        healthy("globex", "globex-web-0"),
    ]);
    // Some API traffic to count.
    let reply = kt.admin(Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(reply.status, StatusCode::OK);

    let text = eventually(
        Duration::from_secs(20),
        "acme's alert in the metrics",
        || async {
            let text = scrape(&kt).await;
            // Both tenants evaluated (one after the other, so wait for both:
            // globex is listed as unknown, -1, before its evaluation).
            (text.contains("knowton_tenant_open_alerts{tenant=\"acme\",severity=\"critical\"} 1")
                && !text
                    .contains("knowton_tenant_status{tenant=\"globex\",plan=\"enterprise\"} -1"))
            .then_some(text)
        },
    )
    .await;
    for expected in [
        "knowton_tenant_status{tenant=\"acme\",plan=\"basic\"} 2",
        "knowton_tenant_status{tenant=\"globex\",plan=\"enterprise\"} 0",
        "knowton_tenant_check_state{tenant=\"acme\",check=\"response_time\"} 2",
        "knowton_tenant_response_time_seconds{tenant=\"acme\"} 2.5",
        "knowton_response_time_threshold_default_seconds{severity=\"critical\"} 2",
        "knowton_check_threshold_default_ratio{check=\"storage\",severity=\"warning\"} 0.85",
        "knowton_plan_storage_limit_bytes{plan=\"basic\"} 10737418240",
        "knowton_tenant_storage_used_bytes{tenant=\"acme\"} 1073741824",
        "knowton_plan_users_limit{plan=\"enterprise\"} 1000",
        "knowton_tenant_open_alerts{tenant=\"acme\",severity=\"critical\"} 1",
        "knowton_ingest_results_total 2",
        "knowton_alert_transitions_total{kind=\"opened\"} 1",
        "knowton_http_requests_total{code=\"200\",method=\"GET\",route=\"/api/v1/tenants\"} 1",
        "knowton_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/tenants\",le=\"+Inf\"} 1",
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    assert!(
        !text.contains("knowton_tenant_check_threshold_ratio{"),
        "defaults are not repeated per tenant"
    );
    let own = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/globex/thresholds",
            Some(
                serde_json::json!({"storagePercent": {"warning": 50.0, "critical": 60.0},
                "responseTimeMs": {"warning": 300.0, "critical": 600.0}}),
            ),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let text = scrape(&kt).await;
    for expected in [
        "knowton_tenant_check_threshold_ratio{tenant=\"globex\",check=\"storage\",severity=\"warning\"} 0.5",
        "knowton_tenant_response_time_threshold_seconds{tenant=\"globex\",severity=\"critical\"} 0.6",
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    assert!(!text.contains("web-0"), "no pod names in labels");
    assert!(!text.contains("127.0.0."), "no addresses in labels");
    // Both with and without per-tenant thresholds.
    let (ok, report) = promtool(&text);
    assert!(
        ok && report.trim().is_empty(),
        "promtool check metrics: {report}\n{text}"
    );
    kt.stop().await;
}
