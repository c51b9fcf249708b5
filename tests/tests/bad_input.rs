//! Every kind of bad input gets a clear 4xx naming what is wrong, and
//! changes nothing.

use knowton_tests::{ADMIN_TOKEN, TestCoordinator, on_every_backend, tenant_request};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_every_backend!(
    malformed_bodies_are_rejected,
    invalid_fields_are_named,
    duplicates_conflict,
    unknown_ids_are_404,
    bad_updates_change_nothing,
);

/// Posts a raw body with a content type.
async fn post_raw(kt: &TestCoordinator, content_type: &str, body: Vec<u8>) -> knowton_tests::Reply {
    let response = kt
        .http
        .post(kt.url("/api/v1/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    knowton_tests::Reply {
        status,
        headers: Default::default(),
        body,
    }
}

async fn malformed_bodies_are_rejected(kt: TestCoordinator) {
    let json = "application/json";
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            json,
            b"{\"name\": \"Acme\",".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (json, b"".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            json,
            b"[1, 2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json,
            format!("{} {{}}", tenant_request("acme", "basic")).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "text/plain",
            tenant_request("acme", "basic").to_string().into_bytes(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "application/x-www-form-urlencoded",
            b"name=acme".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let reply = post_raw(&kt, content_type, body.clone()).await;
        assert_eq!(
            reply.error(status).0,
            code,
            "{content_type} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Over 64 KiB, even though otherwise valid JSON.
    let mut big = tenant_request("acme", "basic");
    big["name"] = json!("x".repeat(70 * 1024));
    let reply = post_raw(&kt, json, big.to_string().into_bytes()).await;
    assert_eq!(
        reply.error(StatusCode::PAYLOAD_TOO_LARGE).0,
        "payload_too_large"
    );
    // A missing content type is not JSON.
    let reply = kt
        .http
        .post(kt.url("/api/v1/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .body(tenant_request("acme", "basic").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(kt.tenant_count().await, 0);
    assert_eq!(kt.db.total_rows().await, 0);
}

async fn invalid_fields_are_named(kt: TestCoordinator) {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("unknown field", json!({"colour": "red"}), "colour"),
        (
            "unknown nested field",
            json!({"branding": {"logo": "x"}}),
            "branding.logo",
        ),
        (
            "unknown feature",
            json!({"features": {"enableNft": true}}),
            "features.enableNft",
        ),
        ("wrong type", json!({"name": 42}), "name"),
        (
            "wrong nested type",
            json!({"features": {"enableBonds": "yes"}}),
            "features.enableBonds",
        ),
        ("null name", json!({"name": null}), "name"),
        ("unknown plan", json!({"plan": "gold"}), "plan"),
        ("blank name", json!({"name": "   "}), "name"),
        (
            "control characters",
            json!({"name": "Acme\u{0007}"}),
            "name",
        ),
        ("slug too short", json!({"slug": "ab"}), "slug"),
        ("slug too long", json!({"slug": "a".repeat(41)}), "slug"),
        ("slug upper case", json!({"slug": "Acme"}), "slug"),
        ("slug underscore", json!({"slug": "ac_me"}), "slug"),
        ("slug leading dash", json!({"slug": "-acme"}), "slug"),
        ("slug non-ascii", json!({"slug": "acmé"}), "slug"),
        (
            "slug sql",
            json!({"slug": "a'; DROP TABLE tenants;--"}),
            "slug",
        ),
        ("slug reserved admin", json!({"slug": "admin"}), "slug"),
        ("slug reserved api", json!({"slug": "api"}), "slug"),
        ("slug reserved www", json!({"slug": "www"}), "slug"),
        ("slug reserved system", json!({"slug": "system"}), "slug"),
        ("slug reserved kube", json!({"slug": "kube-system"}), "slug"),
        (
            "domain single label",
            json!({"domain": "localhost"}),
            "domain",
        ),
        (
            "domain with scheme",
            json!({"domain": "https://acme.com"}),
            "domain",
        ),
        (
            "domain with space",
            json!({"domain": "acme corp.com"}),
            "domain",
        ),
        ("domain ip", json!({"domain": "10.0.0.1"}), "domain"),
        (
            "domain empty label",
            json!({"domain": "acme..com"}),
            "domain",
        ),
        (
            "email missing at",
            json!({"adminEmail": "admin.acme.com"}),
            "adminEmail",
        ),
        (
            "email bad host",
            json!({"adminEmail": "admin@acme"}),
            "adminEmail",
        ),
        (
            "email sql",
            json!({"adminEmail": "a'--@acme.com' OR 1=1"}),
            "adminEmail",
        ),
        (
            "colour name",
            json!({"branding": {"primaryColor": "red"}}),
            "branding.primaryColor",
        ),
        (
            "colour short",
            json!({"branding": {"secondaryColor": "#fff"}}),
            "branding.secondaryColor",
        ),
        (
            "colour not hex",
            json!({"branding": {"primaryColor": "#GGGGGG"}}),
            "branding.primaryColor",
        ),
        (
            "logo not https",
            json!({"branding": {"logoUrl": "javascript:alert(1)"}}),
            "branding.logoUrl",
        ),
        (
            "feature beyond plan",
            json!({"plan": "basic", "features": {"enableEnterprise": true}}),
            "features.enableEnterprise",
        ),
    ];
    for (what, patch, field) in cases {
        let mut req = tenant_request("acme", "basic");
        for (k, v) in patch.as_object().unwrap() {
            req[k] = v.clone();
        }
        let reply = kt.admin(Method::POST, "/api/v1/tenants", Some(req)).await;
        let (code, named) = reply.error(StatusCode::BAD_REQUEST);
        assert_eq!(code, "invalid_field", "{what}: {}", reply.body);
        assert_eq!(named, field, "{what}: {}", reply.body);
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{what}"
        );
    }
    // A missing required field is named too.
    let mut req = tenant_request("acme", "basic");
    req.as_object_mut().unwrap().remove("adminEmail");
    let reply = kt.admin(Method::POST, "/api/v1/tenants", Some(req)).await;
    assert_eq!(reply.error(StatusCode::BAD_REQUEST).1, "adminEmail");
    assert_eq!(kt.db.total_rows().await, 0, "bad input changed nothing");
}

async fn duplicates_conflict(kt: TestCoordinator) {
    kt.provision("acme", "basic").await;
    let before = kt.db.total_rows().await;

    let mut same_slug = tenant_request("acme", "enterprise");
    same_slug["domain"] = json!("other.example.com");
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants", Some(same_slug))
        .await;
    assert_eq!(
        reply.error(StatusCode::CONFLICT),
        ("slug_taken".into(), "slug".into())
    );

    let mut same_domain = tenant_request("globex", "basic");
    same_domain["domain"] = json!("ACME.knowton.example.com");
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants", Some(same_domain))
        .await;
    assert_eq!(
        reply.error(StatusCode::CONFLICT),
        ("domain_taken".into(), "domain".into())
    );

    // Changing another tenant's domain to a taken one is refused as well.
    kt.provision("globex", "basic").await;
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/globex",
            Some(json!({"domain": "acme.knowton.example.com"})),
        )
        .await;
    assert_eq!(reply.error(StatusCode::CONFLICT).0, "domain_taken");
    let globex = kt.admin(Method::GET, "/api/v1/tenants/globex", None).await;
    assert_eq!(globex.body["domain"], "globex.knowton.example.com");
    assert_eq!(globex.body["configVersion"], 1);
    assert!(kt.db.total_rows().await > before);
    assert_eq!(kt.tenant_count().await, 2);
}

async fn unknown_ids_are_404(kt: TestCoordinator) {
    let missing = uuid::Uuid::new_v4();
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/tenants/{missing}"), None),
        (
            Method::GET,
            "/api/v1/tenants/no-such-tenant".to_owned(),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/tenants/{missing}"),
            Some(json!({"plan": "basic"})),
        ),
        (Method::DELETE, format!("/api/v1/tenants/{missing}"), None),
        (
            Method::DELETE,
            format!("/api/v1/tenants/{missing}?purge=true"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{missing}/api-keys/production/rotate"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{missing}/config-history"),
            None,
        ),
    ] {
        let reply = kt.admin(method.clone(), &path, body).await;
        assert_eq!(
            reply.error(StatusCode::NOT_FOUND).0,
            "tenant_not_found",
            "{method} {path}"
        );
    }
    let reply = kt.admin(Method::GET, "/api/v1/nothing-here", None).await;
    assert_eq!(reply.error(StatusCode::NOT_FOUND).0, "not_found");
    let reply = kt.admin(Method::PATCH, "/api/v1/tenants", None).await;
    assert_eq!(
        reply.error(StatusCode::METHOD_NOT_ALLOWED).0,
        "method_not_allowed"
    );
}

async fn bad_updates_change_nothing(kt: TestCoordinator) {
    kt.provision("acme", "professional").await;
    let before = kt
        .admin(Method::GET, "/api/v1/tenants/acme", None)
        .await
        .body;
    for (body, field) in [
        (json!({}), "body"),
        (json!({"plan": "platinum"}), "plan"),
        (json!({"domain": "not a domain"}), "domain"),
        (
            json!({"branding": {"primaryColor": "#12345"}}),
            "branding.primaryColor",
        ),
        (
            json!({"features": {"enableCustomDevelopment": true}}),
            "features.enableCustomDevelopment",
        ),
        (json!({"slug": "renamed"}), "slug"),
    ] {
        let reply = kt
            .admin(Method::PUT, "/api/v1/tenants/acme", Some(body.clone()))
            .await;
        assert_eq!(reply.error(StatusCode::BAD_REQUEST).1, field, "{body}");
    }
    for query in [
        "limit=0",
        "limit=500",
        "limit=ten",
        "cursor=bogus",
        "status=sleeping",
        "colour=red",
    ] {
        let reply = kt
            .admin(Method::GET, &format!("/api/v1/tenants?{query}"), None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.body
        );
    }
    let reply = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/api-keys/staging/rotate",
            None,
        )
        .await;
    assert_eq!(reply.error(StatusCode::BAD_REQUEST).1, "kind");
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme/usage",
            Some(json!({"users": -1, "storageBytes": 0, "apiRequests": 0})),
        )
        .await;
    assert_eq!(reply.error(StatusCode::BAD_REQUEST).1, "users");
    let after = kt
        .admin(Method::GET, "/api/v1/tenants/acme", None)
        .await
        .body;
    assert_eq!(before, after);
}
