//! No raw API key, password or deployment secret exists anywhere in the
//! database: every column of every table is scanned.

use knowton_tests::{TestCoordinator, on_every_backend};
use reqwest::{Method, StatusCode};

on_every_backend!(no_secret_is_stored_in_the_clear);

async fn no_secret_is_stored_in_the_clear(kt: TestCoordinator) {
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (slug, plan) in [
        ("acme", "basic"),
        ("globex", "professional"),
        ("initech", "enterprise"),
    ] {
        let created = kt.provision(slug, plan).await;
        let id = created["tenant"]["id"].as_str().unwrap().to_owned();
        secrets.push((
            format!("{slug} temporary password"),
            created["admin"]["temporaryPassword"]
                .as_str()
                .unwrap()
                .into(),
        ));
        secrets.push((
            format!("{slug} production key"),
            created["apiKeys"]["production"].as_str().unwrap().into(),
        ));
        secrets.push((
            format!("{slug} development key"),
            created["apiKeys"]["development"].as_str().unwrap().into(),
        ));
        // The deployment secrets, opened with the coordinator's key.
        let sealed = kt
            .db
            .rows(&format!(
                "SELECT name, sealed FROM tenant_secrets WHERE tenant_id = '{id}'"
            ))
            .await;
        assert_eq!(sealed.len(), 2);
        for row in sealed {
            let name = row[0].clone().unwrap();
            let plain = kt
                .secret_box()
                .open(row[1].as_deref().unwrap(), &format!("tenant/{id}/{name}"))
                .unwrap();
            secrets.push((format!("{slug} {name}"), String::from_utf8(plain).unwrap()));
        }
    }
    // A rotated key and its successor.
    let rotated = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/api-keys/production/rotate",
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    secrets.push((
        "rotated key".into(),
        rotated.body["apiKey"].as_str().unwrap().into(),
    ));

    let values = kt.db.every_value().await;
    let tables: std::collections::BTreeSet<&str> =
        values.iter().map(|(t, _, _)| t.as_str()).collect();
    for table in [
        "tenants",
        "tenant_users",
        "api_keys",
        "tenant_secrets",
        "outbox",
        "tenant_config_history",
    ] {
        assert!(tables.contains(table), "scan covered {table}");
    }
    for (what, secret) in &secrets {
        assert!(secret.len() >= 16, "{what}");
        // The random part alone must not appear either.
        let core = secret
            .strip_prefix("kt_live_")
            .or(secret.strip_prefix("kt_test_"))
            .unwrap_or(secret);
        for (table, column, value) in &values {
            assert!(!value.contains(core), "{what} found in {table}.{column}");
        }
    }
    // Nor in any read endpoint.
    let listed = kt
        .admin(Method::GET, "/api/v1/tenants", None)
        .await
        .body
        .to_string();
    for (what, secret) in &secrets {
        assert!(!listed.contains(secret.as_str()), "{what} listed");
    }
}
