//! Authentication and tenant isolation: a tenant's key reaches its own
//! tenant only; missing or wrong credentials are 401.

use knowton_tests::{ADMIN_TOKEN, TestCoordinator, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_every_backend!(
    tenant_keys_reach_only_their_tenant,
    bad_credentials_are_401,
    a_slug_shaped_like_another_tenants_id_reaches_nothing,
    development_keys_read_and_rotate_themselves_only,
);

async fn tenant_keys_reach_only_their_tenant(kt: TestCoordinator) {
    let a = kt.provision("tenant-a", "professional").await;
    let b = kt.provision("tenant-b", "professional").await;
    let a_key = a["apiKeys"]["production"].as_str().unwrap();
    let a_dev = a["apiKeys"]["development"].as_str().unwrap();
    let a_id = a["tenant"]["id"].as_str().unwrap();
    let b_id = b["tenant"]["id"].as_str().unwrap();
    let b_before = kt
        .admin(Method::GET, "/api/v1/tenants/tenant-b", None)
        .await
        .body;

    // Its own tenant, by slug and by id, with either key.
    for key in [a_key, a_dev] {
        for target in ["tenant-a", a_id] {
            let reply = kt
                .call(
                    Method::GET,
                    &format!("/api/v1/tenants/{target}"),
                    Some(key),
                    None,
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert_eq!(reply.body["slug"], "tenant-a");
        }
    }
    // Tenant B: read, change, rotate, history, usage are all 403.
    for target in ["tenant-b", b_id] {
        for (method, path, body) in [
            (Method::GET, format!("/api/v1/tenants/{target}"), None),
            (
                Method::PUT,
                format!("/api/v1/tenants/{target}"),
                Some(json!({"branding": {"primaryColor": "#000000"}})),
            ),
            (
                Method::POST,
                format!("/api/v1/tenants/{target}/api-keys/production/rotate"),
                None,
            ),
            (
                Method::GET,
                format!("/api/v1/tenants/{target}/config-history"),
                None,
            ),
            (
                Method::PUT,
                format!("/api/v1/tenants/{target}/usage"),
                Some(json!({"users": 1, "storageBytes": 0, "apiRequests": 0})),
            ),
            (Method::DELETE, format!("/api/v1/tenants/{target}"), None),
        ] {
            let reply = kt.call(method.clone(), &path, Some(a_key), body).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{method} {path}: {}",
                reply.body
            );
        }
    }
    // A tenant that does not exist looks the same as another tenant's.
    let reply = kt
        .call(
            Method::GET,
            "/api/v1/tenants/does-not-exist",
            Some(a_key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Admin-only operations.
    for (method, path, body) in [
        (Method::GET, "/api/v1/tenants".to_owned(), None),
        (
            Method::POST,
            "/api/v1/tenants".to_owned(),
            Some(knowton_tests::tenant_request("evil", "basic")),
        ),
        (
            Method::PUT,
            "/api/v1/tenants/tenant-a".to_owned(),
            Some(json!({"plan": "enterprise"})),
        ),
        (
            Method::PUT,
            "/api/v1/tenants/tenant-a".to_owned(),
            Some(json!({"domain": "stolen.example.com"})),
        ),
        (Method::DELETE, "/api/v1/tenants/tenant-a".to_owned(), None),
    ] {
        let reply = kt.call(method.clone(), &path, Some(a_key), body).await;
        assert_eq!(
            reply.error(StatusCode::FORBIDDEN).0,
            "admin_required",
            "{method} {path}"
        );
    }
    // What a tenant may change about itself.
    let reply = kt
        .call(
            Method::PUT,
            "/api/v1/tenants/tenant-a",
            Some(a_key),
            Some(json!({"branding": {"primaryColor": "#ABCDEF"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let history = kt
        .admin(Method::GET, "/api/v1/tenants/tenant-a/config-history", None)
        .await;
    let actor = history.body["versions"][1]["actor"].as_str().unwrap();
    assert!(actor.starts_with("tenant-key:kt_live_"), "{actor}");

    // X-Tenant-Slug must agree with the key.
    let send = |slug: &'static str| {
        kt.http
            .get(kt.url("/api/v1/tenants/tenant-a"))
            .bearer_auth(a_key)
            .header("X-Tenant-Slug", slug)
            .send()
    };
    assert_eq!(send("tenant-a").await.unwrap().status(), StatusCode::OK);
    let mismatch = send("tenant-b").await.unwrap();
    assert_eq!(mismatch.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = mismatch.json().await.unwrap();
    assert_eq!(body["error"]["code"], "tenant_mismatch");

    // Tenant B is untouched.
    assert_eq!(
        kt.admin(Method::GET, "/api/v1/tenants/tenant-b", None)
            .await
            .body,
        b_before
    );
}

async fn bad_credentials_are_401(kt: TestCoordinator) {
    kt.provision("acme", "basic").await;
    let path = "/api/v1/tenants/acme";
    let missing = kt.call(Method::GET, path, None, None).await;
    assert_eq!(missing.error(StatusCode::UNAUTHORIZED).0, "unauthorized");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    for token in [
        "not-the-admin-token",
        &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
        "kt_live_0000000000000000000000000000000000000000",
        "kt_test_",
    ] {
        let reply = kt.call(Method::GET, path, Some(token), None).await;
        assert_eq!(
            reply.error(StatusCode::UNAUTHORIZED).0,
            "unauthorized",
            "{token}"
        );
    }
    let basic = kt
        .http
        .get(kt.url(path))
        .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    // Health and the API description need no token.
    for open in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        assert_eq!(
            kt.call(Method::GET, open, None, None).await.status,
            StatusCode::OK,
            "{open}"
        );
    }
}

/// Finding 1 of the hardening review: tenant B with slug = tenant A's id
/// passed the key check (path string = key's slug), then the path was
/// parsed as A's id, and B's key rotated A's production key and got it.
async fn a_slug_shaped_like_another_tenants_id_reaches_nothing(kt: TestCoordinator) {
    let a = kt.provision("tenant-a", "professional").await;
    let a_id = a["tenant"]["id"].as_str().unwrap().to_owned();
    let a_key = a["apiKeys"]["production"].as_str().unwrap().to_owned();

    // Provisioning refuses the slug, naming the field.
    let mut request = knowton_tests::tenant_request("tenant-b", "basic");
    request["slug"] = json!(a_id);
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants", Some(request))
        .await;
    let (code, field) = reply.error(StatusCode::BAD_REQUEST);
    assert_eq!((code.as_str(), field.as_str()), ("invalid_field", "slug"));
    assert_eq!(kt.tenant_count().await, 1);

    // A tenant whose slug was stored before that rule (written here behind
    // the API's back) still reaches only itself: access is decided by id.
    let b = kt.provision("tenant-b", "basic").await;
    let b_key = b["apiKeys"]["production"].as_str().unwrap().to_owned();
    kt.db
        .execute(&format!(
            "UPDATE tenants SET slug = '{a_id}' WHERE slug = 'tenant-b'"
        ))
        .await;
    for (method, path) in [
        (
            Method::POST,
            format!("/api/v1/tenants/{a_id}/api-keys/production/rotate"),
        ),
        (Method::GET, format!("/api/v1/tenants/{a_id}")),
        (Method::GET, format!("/api/v1/tenants/{a_id}/notifications")),
        (
            Method::GET,
            format!("/api/v1/tenants/{a_id}/config-history"),
        ),
    ] {
        let reply = kt.call(method.clone(), &path, Some(&b_key), None).await;
        assert_eq!(
            reply.error(StatusCode::FORBIDDEN).0,
            "forbidden",
            "{method} {path}"
        );
    }
    // A's production key was not rotated.
    let reply = kt
        .call(Method::GET, "/api/v1/tenants/tenant-a", Some(&a_key), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

/// Finding 6: a development key could rotate the production key and
/// receive it. It may read its tenant and rotate itself; everything that
/// changes the tenant or hands out a production secret needs the
/// production key (or the admin).
async fn development_keys_read_and_rotate_themselves_only(kt: TestCoordinator) {
    let a = kt.provision("tenant-a", "professional").await;
    let live = a["apiKeys"]["production"].as_str().unwrap().to_owned();
    let dev = a["apiKeys"]["development"].as_str().unwrap().to_owned();
    let before = kt
        .admin(Method::GET, "/api/v1/tenants/tenant-a", None)
        .await
        .body;

    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/tenants/tenant-a/api-keys/production/rotate",
            None,
        ),
        (
            Method::PUT,
            "/api/v1/tenants/tenant-a",
            Some(json!({"branding": {"primaryColor": "#000000"}})),
        ),
        (
            Method::PUT,
            "/api/v1/tenants/tenant-a/notifications",
            Some(json!({"emails": ["ops@example.com"]})),
        ),
        (
            Method::PUT,
            "/api/v1/tenants/tenant-a/usage",
            Some(json!({"users": 1, "storageBytes": 0, "apiRequests": 0})),
        ),
        (
            Method::POST,
            "/api/v1/monitoring/silences",
            Some(json!({"tenant": "tenant-a", "endsAt": "2999-01-01T00:00:00Z"})),
        ),
    ] {
        let reply = kt.call(method.clone(), path, Some(&dev), body).await;
        assert_eq!(
            reply.error(StatusCode::FORBIDDEN).0,
            "production_key_required",
            "{method} {path}"
        );
    }
    assert_eq!(
        kt.admin(Method::GET, "/api/v1/tenants/tenant-a", None)
            .await
            .body,
        before,
        "nothing changed"
    );
    // The production key still works: it was not rotated.
    let reply = kt
        .call(Method::GET, "/api/v1/tenants/tenant-a", Some(&live), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // Reads, and rotating itself.
    for path in [
        "/api/v1/tenants/tenant-a",
        "/api/v1/tenants/tenant-a/notifications",
        "/api/v1/tenants/tenant-a/config-history",
        "/api/v1/monitoring/alerts",
    ] {
        let reply = kt.call(Method::GET, path, Some(&dev), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
    let rotated = kt
        .call(
            Method::POST,
            "/api/v1/tenants/tenant-a/api-keys/development/rotate",
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert!(
        rotated.body["apiKey"]
            .as_str()
            .unwrap()
            .starts_with("kt_test_")
    );
    // The production key may change what the development key may not.
    let reply = kt
        .call(
            Method::PUT,
            "/api/v1/tenants/tenant-a",
            Some(&live),
            Some(json!({"branding": {"primaryColor": "#ABCDEF"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
