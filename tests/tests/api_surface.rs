//! Health, readiness, the OpenAPI document and pagination.

use knowton_tests::{Db, TestCoordinator, on_every_backend};
use reqwest::{Method, StatusCode};

on_every_backend!(pages_walk_every_tenant_once);

async fn pages_walk_every_tenant_once(kt: TestCoordinator) {
    let mut slugs = Vec::new();
    for i in 0..7 {
        let slug = format!("tenant-{i}");
        kt.provision(&slug, "basic").await;
        slugs.push(slug);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/tenants?limit=3&cursor={c}"),
            None => "/api/v1/tenants?limit=3".to_owned(),
        };
        let page = kt.admin(Method::GET, &path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let tenants = page.body["tenants"].as_array().unwrap();
        assert!(tenants.len() <= 3);
        seen.extend(
            tenants
                .iter()
                .map(|t| t["slug"].as_str().unwrap().to_owned()),
        );
        match page.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, slugs, "every tenant once, oldest first");
}

#[tokio::test]
async fn health_readiness_and_openapi() {
    let kt = TestCoordinator::start(Db::Sqlite).await;
    let health = kt.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let ready = kt.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    let doc = kt
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/tenants", &["get", "post"][..]),
        ("/api/v1/tenants/{idOrSlug}", &["get", "put", "delete"]),
        (
            "/api/v1/tenants/{idOrSlug}/api-keys/{kind}/rotate",
            &["post"],
        ),
        ("/api/v1/tenants/{idOrSlug}/usage", &["put"]),
        ("/api/v1/tenants/{idOrSlug}/config-history", &["get"]),
        ("/api/v1/plans", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} documented"
            );
        }
    }
    let schemas = doc.body["components"]["schemas"].as_object().unwrap();
    for schema in [
        "ProvisionRequest",
        "ProvisionResponse",
        "TenantView",
        "ErrorBody",
        "UpdateRequest",
        "Plan",
        "Features",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema}");
    }
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());

    let plans = kt.admin(Method::GET, "/api/v1/plans", None).await;
    assert_eq!(plans.body[2]["limits"]["apiRequestsPerMinute"], 2000);

    // Readiness turns 503 as soon as shutdown starts; the server then stops.
    let state = kt.running_state();
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let draining = kt.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(draining.status, StatusCode::SERVICE_UNAVAILABLE);
    let base = kt.base.clone();
    kt.stop().await;
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "listener closed"
    );
}
