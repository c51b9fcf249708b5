//! Each numbered provisioning step, seen through the API and in the store.

use knowton_coordinator::credentials::{hash_api_key, verify_password};
use knowton_tests::{TestCoordinator, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_every_backend!(
    provisioning_creates_every_part,
    feature_overrides_and_branding_are_applied,
    names_are_stored_verbatim,
    slug_and_id_both_find_the_tenant,
);

fn acme() -> Value {
    json!({
        "name": "Acme Corp",
        "slug": "acme",
        "plan": "enterprise",
        "adminEmail": "admin@acme.com",
        "domain": "Acme.KnowTon.com",
        "branding": {"companyName": "Acme", "primaryColor": "#112233", "secondaryColor": "#445566",
                     "logoUrl": "https://cdn.acme.com/logo.svg"}
    })
}

async fn provisioning_creates_every_part(kt: TestCoordinator) {
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants", Some(acme()))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let body = reply.body;
    let tenant = &body["tenant"];
    let id = tenant["id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.headers["location"],
        format!("/api/v1/tenants/{id}").as_str()
    );

    // 1. the tenant record
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(tenant["name"], "Acme Corp");
    assert_eq!(tenant["slug"], "acme");
    assert_eq!(tenant["plan"], "enterprise");
    assert_eq!(
        tenant["domain"], "acme.knowton.com",
        "domains are stored lower-case"
    );
    assert_eq!(tenant["status"], "active");
    assert!(tenant["createdAt"].is_string() && tenant["updatedAt"].is_string());

    // 2. the admin user: temporary password, argon2id hash, must change
    let password = body["admin"]["temporaryPassword"].as_str().unwrap();
    assert!(password.chars().count() >= 16);
    assert_eq!(body["admin"]["email"], "admin@acme.com");
    assert_eq!(body["admin"]["mustChangePassword"], true);
    let users = kt
        .db
        .rows(&format!(
            "SELECT email, role, password_hash, CAST(must_change_password AS TEXT) \
             FROM tenant_users WHERE tenant_id = '{id}'"
        ))
        .await;
    assert_eq!(users.len(), 1);
    let user = &users[0];
    assert_eq!(user[0].as_deref(), Some("admin@acme.com"));
    assert_eq!(user[1].as_deref(), Some("admin"));
    let hash = user[2].as_deref().unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(verify_password(password, hash));
    assert!(matches!(user[3].as_deref(), Some("1" | "true")));

    // 3. two API keys, stored as SHA-256 and a display prefix
    let live = body["apiKeys"]["production"].as_str().unwrap();
    let test = body["apiKeys"]["development"].as_str().unwrap();
    for (key, prefix) in [(live, "kt_live_"), (test, "kt_test_")] {
        let random = key.strip_prefix(prefix).expect(prefix);
        assert!(random.len() >= 32 && random.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    let keys = kt
        .db
        .rows(&format!(
            "SELECT kind, key_hash, display_prefix FROM api_keys WHERE tenant_id = '{id}' ORDER BY kind DESC"
        ))
        .await;
    assert_eq!(keys.len(), 2);
    for (row, key, kind) in [
        (&keys[0], live, "production"),
        (&keys[1], test, "development"),
    ] {
        assert_eq!(row[0].as_deref(), Some(kind));
        assert_eq!(row[1].as_deref(), Some(hash_api_key(key).as_str()));
        let prefix = row[2].as_deref().unwrap();
        assert!(key.starts_with(prefix) && prefix.len() < key.len() / 2);
    }
    let listed: Vec<&str> = tenant["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["production", "development"]);

    // 4. branding, 5. features (the plan's), 6. usage
    assert_eq!(tenant["branding"]["companyName"], "Acme");
    assert_eq!(tenant["branding"]["primaryColor"], "#112233");
    assert_eq!(
        tenant["branding"]["logoUrl"],
        "https://cdn.acme.com/logo.svg"
    );
    for flag in [
        "enableNFT",
        "enableBonds",
        "enableFractionalization",
        "enableEnterprise",
        "enableCustomDevelopment",
    ] {
        assert_eq!(tenant["features"][flag], true, "{flag}");
    }
    assert_eq!(
        tenant["usage"],
        json!({"users": 1, "storageBytes": 0, "apiRequests": 0})
    );
    assert_eq!(tenant["limits"]["maxUsers"], 1000);

    // 7. deployment secrets: sealed at rest, 32 and 64 characters inside
    let sealed = kt
        .db
        .rows(&format!(
            "SELECT name, sealed FROM tenant_secrets WHERE tenant_id = '{id}' ORDER BY name"
        ))
        .await;
    let secret_box = kt.secret_box();
    let opened: Vec<(String, String)> = sealed
        .iter()
        .map(|row| {
            let name = row[0].clone().unwrap();
            let plain = secret_box
                .open(row[1].as_deref().unwrap(), &format!("tenant/{id}/{name}"))
                .expect("secret opens with the coordinator's key");
            (name, String::from_utf8(plain).unwrap())
        })
        .collect();
    assert_eq!(opened[0].0, "database_password");
    assert_eq!(opened[0].1.len(), 32);
    assert_eq!(opened[1].0, "jwt_secret");
    assert_eq!(opened[1].1.len(), 64);
    assert_ne!(opened[0].1, opened[1].1[..32]);

    // 8. the welcome e-mail, sealed in the outbox
    let outbox = kt
        .db
        .rows(&format!(
            "SELECT id, channel, recipient, subject, sealed_body, idempotency_key FROM outbox WHERE tenant_id = '{id}'"
        ))
        .await;
    assert_eq!(outbox.len(), 1);
    let mail = &outbox[0];
    assert_eq!(mail[1].as_deref(), Some("email"));
    assert_eq!(mail[2].as_deref(), Some("admin@acme.com"));
    assert!(mail[3].as_deref().unwrap().contains("Acme Corp"));
    assert_eq!(mail[5].as_deref(), Some(format!("welcome:{id}").as_str()));
    let message_id = mail[0].as_deref().unwrap();
    let body_json = secret_box
        .open(mail[4].as_deref().unwrap(), &format!("outbox/{message_id}"))
        .unwrap();
    let email: Value = serde_json::from_slice(&body_json).unwrap();
    for part in ["text", "html"] {
        let text = email[part].as_str().unwrap();
        for needle in [
            "Acme Corp",
            "https://acme.knowton.com",
            "admin@acme.com",
            password,
            "must change",
        ] {
            assert!(text.contains(needle), "{part} lacks {needle:?}");
        }
    }

    // 9. configuration history version 1
    let history = kt
        .admin(
            Method::GET,
            &format!("/api/v1/tenants/{id}/config-history"),
            None,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK);
    let versions = history.body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["actor"], "admin");
    assert_eq!(versions[0]["snapshot"]["plan"], "enterprise");
    assert_eq!(versions[0]["snapshot"]["domain"], "acme.knowton.com");

    // The read endpoint shows no secret.
    let read = kt
        .admin(Method::GET, &format!("/api/v1/tenants/{id}"), None)
        .await;
    let text = read.body.to_string();
    for secret in [password, live, test, &opened[0].1, &opened[1].1] {
        assert!(!text.contains(secret));
    }
    assert_eq!(read.body["id"], tenant["id"]);
}

async fn feature_overrides_and_branding_are_applied(kt: TestCoordinator) {
    let mut req = knowton_tests::tenant_request("globex", "professional");
    req["features"] = json!({"enableBonds": false});
    let reply = kt.admin(Method::POST, "/api/v1/tenants", Some(req)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let features = &reply.body["tenant"]["features"];
    assert_eq!(features["enableBonds"], false);
    assert_eq!(features["enableNFT"], true);
    assert_eq!(features["enableEnterprise"], true);
    assert_eq!(features["enableCustomDevelopment"], false);
    let branding = &reply.body["tenant"]["branding"];
    assert_eq!(
        branding["companyName"], "globex Corp",
        "defaults to the tenant's name"
    );
    assert_eq!(branding["primaryColor"], "#1E40AF");

    let mut req = knowton_tests::tenant_request("initech", "professional");
    req["features"] = json!({"enableCustomDevelopment": true});
    let reply = kt.admin(Method::POST, "/api/v1/tenants", Some(req)).await;
    let (code, field) = reply.error(StatusCode::BAD_REQUEST);
    assert_eq!(
        (code.as_str(), field.as_str()),
        ("invalid_field", "features.enableCustomDevelopment")
    );
    assert_eq!(kt.tenant_count().await, 1);
}

async fn names_are_stored_verbatim(kt: TestCoordinator) {
    for (slug, name) in [
        ("bobby", "Robert'); DROP TABLE tenants;--"),
        ("unicode", "Ångström & Söhne 株式会社 \"Ünïcødé\""),
        ("percent", "100% _wild_ \\ 'quotes' ; --"),
    ] {
        let mut req = knowton_tests::tenant_request(slug, "basic");
        req["name"] = json!(name);
        let reply = kt.admin(Method::POST, "/api/v1/tenants", Some(req)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let read = kt
            .admin(Method::GET, &format!("/api/v1/tenants/{slug}"), None)
            .await;
        assert_eq!(read.body["name"], name);
        assert_eq!(read.body["branding"]["companyName"], name);
    }
    assert_eq!(kt.tenant_count().await, 3);
}

async fn slug_and_id_both_find_the_tenant(kt: TestCoordinator) {
    let created = kt.provision("hooli", "basic").await;
    let id = created["tenant"]["id"].as_str().unwrap();
    let by_slug = kt.admin(Method::GET, "/api/v1/tenants/hooli", None).await;
    let by_id = kt
        .admin(Method::GET, &format!("/api/v1/tenants/{id}"), None)
        .await;
    assert_eq!(by_slug.status, StatusCode::OK);
    assert_eq!(by_slug.body, by_id.body);
    assert_eq!(by_slug.body["features"]["enableEnterprise"], false);
}
