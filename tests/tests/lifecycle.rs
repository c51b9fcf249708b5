//! Key rotation, plan changes with the downgrade check, deprovision that
//! keeps data, and purge.

use std::time::Duration;

use knowton_tests::feed::{Feed, Shape, healthy};
use knowton_tests::{TestCoordinator, eventually, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_every_backend!(
    rotation_replaces_a_key_at_once,
    downgrades_that_do_not_fit_are_refused,
    upgrades_switch_on_the_plan_features,
    deprovision_keeps_data_and_is_idempotent,
    purge_deletes_every_row_of_the_tenant_only,
    concurrent_updates_lose_nothing,
    if_match_refuses_a_stale_version,
);

const GIB: u64 = 1 << 30;

async fn rotation_replaces_a_key_at_once(kt: TestCoordinator) {
    let created = kt.provision("acme", "basic").await;
    let old = created["apiKeys"]["production"]
        .as_str()
        .unwrap()
        .to_owned();
    let dev = created["apiKeys"]["development"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = "/api/v1/tenants/acme/api-keys/production/rotate";

    // A tenant may rotate its own key with that key.
    let rotated = kt.call(Method::POST, path, Some(&old), None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.body["apiKey"].as_str().unwrap().to_owned();
    assert!(new.starts_with("kt_live_") && new != old);
    assert!(new.starts_with(rotated.body["displayPrefix"].as_str().unwrap()));

    let kt = &kt;
    let get = |key: String| async move {
        kt.call(Method::GET, "/api/v1/tenants/acme", Some(&key), None)
            .await
    };
    assert_eq!(
        get(old.clone()).await.status,
        StatusCode::UNAUTHORIZED,
        "old key stops at once"
    );
    let read = get(new.clone()).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        get(dev.clone()).await.status,
        StatusCode::OK,
        "the other key is untouched"
    );
    // The new key is never shown again.
    assert!(!read.body.to_string().contains(&new));
    let keys = read.body["apiKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(new.starts_with(keys[0]["displayPrefix"].as_str().unwrap()));

    // The admin rotates the development key.
    let rotated = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/api-keys/development/rotate",
            None,
        )
        .await;
    let new_dev = rotated.body["apiKey"].as_str().unwrap().to_owned();
    assert!(new_dev.starts_with("kt_test_"));
    assert_eq!(get(dev).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(new_dev).await.status, StatusCode::OK);
}

async fn downgrades_that_do_not_fit_are_refused(kt: TestCoordinator) {
    kt.provision("acme", "enterprise").await;
    let usage = json!({"users": 50, "storageBytes": 20 * GIB, "apiRequests": 1234});
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme/usage",
            Some(usage.clone()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["usage"], usage);

    let refused = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "basic"})),
        )
        .await;
    let (code, field) = refused.error(StatusCode::CONFLICT);
    assert_eq!(
        (code.as_str(), field.as_str()),
        ("plan_limits_exceeded", "plan")
    );
    let limits: Vec<&str> = refused.body["error"]["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["limit"].as_str().unwrap())
        .collect();
    assert_eq!(limits, ["maxUsers", "storageBytes"]);
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("maxUsers 50 > 10") && message.contains("force"),
        "{message}"
    );
    let unchanged = kt.admin(Method::GET, "/api/v1/tenants/acme", None).await;
    assert_eq!(unchanged.body["plan"], "enterprise");
    assert_eq!(unchanged.body["configVersion"], 1);

    // Professional fits: 50 users of 100, 20 GiB of 100 GiB.
    let pro = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "professional"})),
        )
        .await;
    assert_eq!(pro.status, StatusCode::OK, "{}", pro.body);
    assert_eq!(pro.body["features"]["enableCustomDevelopment"], false);

    // force=true downgrades anyway (admin only).
    let forced = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme?force=true",
            Some(json!({"plan": "basic"})),
        )
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.body);
    assert_eq!(forced.body["plan"], "basic");
    assert_eq!(forced.body["limits"]["maxUsers"], 10);
    assert_eq!(forced.body["features"]["enableEnterprise"], false);

    let history = kt
        .admin(Method::GET, "/api/v1/tenants/acme/config-history", None)
        .await;
    let changes: Vec<&str> = history.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes[0], "provisioned");
    assert!(
        changes[1].contains("plan enterprise -> professional"),
        "{changes:?}"
    );
    assert!(
        changes[2].contains("plan professional -> basic"),
        "{changes:?}"
    );
    assert_eq!(history.body["versions"][2]["snapshot"]["plan"], "basic");
}

async fn upgrades_switch_on_the_plan_features(kt: TestCoordinator) {
    let mut req = knowton_tests::tenant_request("acme", "basic");
    req["features"] = json!({"enableBonds": false});
    kt.admin(Method::POST, "/api/v1/tenants", Some(req)).await;
    let up = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "enterprise", "domain": "portal.acme.com",
            "branding": {"secondaryColor": "#00FF00"}})),
        )
        .await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    assert_eq!(up.body["plan"], "enterprise");
    assert_eq!(up.body["domain"], "portal.acme.com");
    assert_eq!(up.body["features"]["enableEnterprise"], true);
    assert_eq!(up.body["features"]["enableCustomDevelopment"], true);
    assert_eq!(
        up.body["features"]["enableBonds"], false,
        "an explicit choice survives the upgrade"
    );
    assert_eq!(up.body["branding"]["secondaryColor"], "#00FF00");
    assert_eq!(up.body["branding"]["primaryColor"], "#1E40AF");
    assert_eq!(up.body["configVersion"], 2);
    // Repeating the same change records nothing new.
    let again = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "enterprise"})),
        )
        .await;
    assert_eq!(again.body["configVersion"], 2);
}

async fn deprovision_keeps_data_and_is_idempotent(kt: TestCoordinator) {
    let created = kt.provision("acme", "professional").await;
    let id = created["tenant"]["id"].as_str().unwrap().to_owned();
    let key = created["apiKeys"]["production"]
        .as_str()
        .unwrap()
        .to_owned();
    let rows_before = data_rows(&kt, &id).await;

    let first = kt.admin(Method::DELETE, "/api/v1/tenants/acme", None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["status"], "deprovisioned");
    let tenant = &first.body["tenant"];
    assert_eq!(tenant["status"], "deprovisioned");
    let until =
        chrono::DateTime::parse_from_rfc3339(tenant["retainUntil"].as_str().unwrap()).unwrap();
    let days = (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!(
        (29..=30).contains(&days),
        "kept for the default 30 days, got {days}"
    );
    assert_eq!(
        tenant["apiKeys"].as_array().unwrap().len(),
        0,
        "keys revoked"
    );

    // Keys stop working, the data stays, every row is still there.
    let reply = kt
        .call(Method::GET, "/api/v1/tenants/acme", Some(&key), None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(data_rows(&kt, &id).await, rows_before);
    let read = kt.admin(Method::GET, "/api/v1/tenants/acme", None).await;
    assert_eq!(read.body["status"], "deprovisioned");

    // Again: same result, same retention date.
    let second = kt
        .admin(Method::DELETE, &format!("/api/v1/tenants/{id}"), None)
        .await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body["tenant"]["retainUntil"], tenant["retainUntil"]);
    assert_eq!(
        second.body["tenant"]["deprovisionedAt"],
        tenant["deprovisionedAt"]
    );

    // A deprovisioned tenant cannot be changed or get new keys.
    let change = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "basic"})),
        )
        .await;
    assert_eq!(change.error(StatusCode::CONFLICT).0, "tenant_deprovisioned");
    let rotate = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/api-keys/production/rotate",
            None,
        )
        .await;
    assert_eq!(rotate.error(StatusCode::CONFLICT).0, "tenant_deprovisioned");
    // Listed with a status filter.
    let listed = kt
        .admin(Method::GET, "/api/v1/tenants?status=deprovisioned", None)
        .await;
    assert_eq!(listed.body["tenants"].as_array().unwrap().len(), 1);
    let active = kt
        .admin(Method::GET, "/api/v1/tenants?status=active", None)
        .await;
    assert_eq!(active.body["tenants"].as_array().unwrap().len(), 0);
}

async fn purge_deletes_every_row_of_the_tenant_only(kt: TestCoordinator) {
    let keep = kt.provision("keeper", "basic").await;
    let keep_id = keep["tenant"]["id"].as_str().unwrap().to_owned();
    let keep_rows = data_rows(&kt, &keep_id).await;
    let gone = kt.provision("goner", "enterprise").await;
    let gone_id = gone["tenant"]["id"].as_str().unwrap().to_owned();
    kt.admin(
        Method::PUT,
        "/api/v1/tenants/goner",
        Some(json!({"plan": "professional"})),
    )
    .await;
    kt.admin(
        Method::POST,
        "/api/v1/tenants/goner/api-keys/production/rotate",
        None,
    )
    .await;
    // Its shared rate budget: on PostgreSQL any request with its key
    // leases from it; SQLite holds budgets in memory, so ask the store.
    kt.running_state()
        .store
        .take_tokens(gone_id.parse().unwrap(), 2000, 1)
        .await
        .unwrap();
    // Monitoring rows too: thresholds, a silence, an alert with its
    // history and notification.
    let thresholds = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/goner/thresholds",
            Some(json!({"responseTimeMs": {"warning": 500.0, "critical": 900.0}})),
        )
        .await;
    assert_eq!(thresholds.status, StatusCode::OK, "{}", thresholds.body);
    let ends = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let silence = kt
        .admin(
            Method::POST,
            "/api/v1/monitoring/silences",
            Some(json!({"tenant": "goner", "check": "storage", "endsAt": ends})),
        )
        .await;
    assert_eq!(silence.status, StatusCode::CREATED, "{}", silence.body);
    // A backup run.
    let backup = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/goner/backups",
            Some(json!({"kind": "storage"})),
        )
        .await;
    assert_eq!(backup.status, StatusCode::ACCEPTED, "{}", backup.body);
    eventually(Duration::from_secs(20), "goner's backup", || async {
        let reply = kt
            .admin(Method::GET, "/api/v1/tenants/goner/backups", None)
            .await;
        (reply.body["runs"][0]["status"] == "succeeded").then_some(())
    })
    .await;
    // A verification of it, and a restore job.
    let verified = kt
        .admin(Method::POST, "/api/v1/tenants/goner/backups/verify", None)
        .await;
    assert_eq!(verified.body["ok"], true, "{}", verified.body);
    let restored = kt
        .restore(
            "goner",
            json!({"at": chrono::Utc::now(), "only": "storage"}),
        )
        .await;
    assert_eq!(restored.body["status"], "succeeded", "{}", restored.body);
    Feed::new(&kt, "node-a").send(vec![healthy("goner", "web-0").slow(1000)]);
    eventually(Duration::from_secs(20), "goner's alert", || async {
        let reply = kt
            .admin(
                Method::GET,
                "/api/v1/monitoring/alerts?resolved=false",
                None,
            )
            .await;
        (reply.body["alerts"].as_array()?.len() == 1).then_some(())
    })
    .await;
    // Deprovisioned first, then purged: both orders work.
    kt.admin(Method::DELETE, "/api/v1/tenants/goner", None)
        .await;
    let empty: Vec<_> = kt
        .db
        .rows_of_tenant(&gone_id)
        .await
        .into_iter()
        // Rollups are stored once a minute has passed.
        .filter(|(table, n)| *n == 0 && table != "health_rollups")
        .collect();
    assert!(
        empty.is_empty(),
        "tables without rows of the tenant: {empty:?}"
    );

    let purged = kt
        .admin(Method::DELETE, "/api/v1/tenants/goner?purge=true", None)
        .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    assert_eq!(purged.body["status"], "purged");
    let left: Vec<_> = kt
        .db
        .rows_of_tenant(&gone_id)
        .await
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(left.is_empty(), "rows left after purge: {left:?}");
    // Its backups went with it (its configuration's, its files' and the
    // safety backup of the restore above).
    let repository = kt.db.dir.path().join("backups");
    let objects = files_under(&repository);
    assert!(!objects.is_empty(), "the other tenant's backups stay");
    assert!(
        !objects.iter().any(|path| path.contains(&gone_id)),
        "backups left after purge: {objects:?}"
    );
    let everything = kt.db.every_value().await;
    assert!(
        !everything
            .iter()
            .any(|(_, _, v)| v.contains(&gone_id) || v.contains("goner"))
    );
    let reply = kt
        .admin(Method::GET, &format!("/api/v1/tenants/{gone_id}"), None)
        .await;
    assert_eq!(reply.error(StatusCode::NOT_FOUND).0, "tenant_not_found");
    let again = kt
        .admin(
            Method::DELETE,
            &format!("/api/v1/tenants/{gone_id}?purge=true"),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // The other tenant is untouched, and its slug-free purge target too.
    assert_eq!(data_rows(&kt, &keep_id).await, keep_rows);
    // An active tenant can be purged directly.
    let direct = kt.provision("direct", "basic").await;
    let direct_id = direct["tenant"]["id"].as_str().unwrap().to_owned();
    kt.admin(Method::DELETE, "/api/v1/tenants/direct?purge=true", None)
        .await;
    assert!(
        kt.db
            .rows_of_tenant(&direct_id)
            .await
            .iter()
            .all(|(_, n)| *n == 0)
    );
    assert_eq!(kt.tenant_count().await, 1);
}

/// The tenant's rows but the deployer's (its deployment and event log),
/// which the deployer writes as it works, after each change.
async fn data_rows(kt: &TestCoordinator, id: &str) -> Vec<(String, usize)> {
    let mut rows = kt.db.rows_of_tenant(id).await;
    rows.retain(|(table, _)| !matches!(table.as_str(), "tenant_deployments" | "deployment_events"));
    rows
}

/// Finding 10 of the hardening review: an update read the tenant and
/// wrote every field back, so a change racing another could silently undo
/// it. 50 concurrent updates of four fields: every one is accepted or
/// refused as a conflict, and for each field the final value is the one
/// written by the accepted update with the highest version.
async fn concurrent_updates_lose_nothing(kt: TestCoordinator) {
    kt.provision("acme", "professional").await;
    const FIELDS: [&str; 4] = ["companyName", "primaryColor", "secondaryColor", "logoUrl"];
    let value = |field: &str, i: usize| match field {
        "companyName" => format!("Acme {i}"),
        "logoUrl" => format!("https://cdn.example.com/logo-{i}.png"),
        _ => format!("#{i:06X}"),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (http, url) = (kt.http.clone(), kt.url("/api/v1/tenants/acme"));
        tasks.spawn(async move {
            let field = FIELDS[i % FIELDS.len()];
            let reply = http
                .put(url)
                .bearer_auth(knowton_tests::ADMIN_TOKEN)
                .json(&json!({"branding": {field: value(field, i)}}))
                .send()
                .await
                .unwrap();
            (i, field, knowton_tests::Reply::from(reply).await)
        });
    }
    let replies = tasks.join_all().await;

    let mut last: std::collections::HashMap<&str, (i64, usize)> = Default::default();
    let mut accepted = 0;
    for (i, field, reply) in &replies {
        match reply.status {
            StatusCode::OK => {
                accepted += 1;
                let version = reply.body["configVersion"].as_i64().unwrap();
                let best = last.entry(field).or_insert((version, *i));
                if version > best.0 {
                    *best = (version, *i);
                }
            }
            _ => {
                let (code, named) = reply.error(StatusCode::CONFLICT);
                assert_eq!(code, "version_conflict", "{}", reply.body);
                assert_eq!(named, format!("branding.{field}"), "{}", reply.body);
            }
        }
    }
    assert!(
        accepted >= FIELDS.len(),
        "at least one per field: {accepted}"
    );
    let tenant = kt.admin(Method::GET, "/api/v1/tenants/acme", None).await;
    for (field, (_, i)) in &last {
        assert_eq!(
            tenant.body["branding"][field],
            value(field, *i),
            "{field}: the last accepted change is kept"
        );
    }
    let history = kt
        .admin(Method::GET, "/api/v1/tenants/acme/config-history", None)
        .await;
    assert_eq!(
        history.body["versions"].as_array().unwrap().len(),
        accepted + 1,
        "one version per accepted change"
    );
    // Each accepted change named its version in the ETag.
    for (_, _, reply) in replies
        .iter()
        .filter(|(_, _, r)| r.status == StatusCode::OK)
    {
        let version = reply.body["configVersion"].as_i64().unwrap();
        assert_eq!(
            reply.header("etag"),
            Some(format!("\"{version}\"").as_str())
        );
    }
}

async fn if_match_refuses_a_stale_version(kt: TestCoordinator) {
    kt.provision("acme", "professional").await;
    let read = kt.admin(Method::GET, "/api/v1/tenants/acme", None).await;
    let etag = read.header("etag").unwrap().to_owned();
    assert_eq!(etag, "\"1\"");
    let put = |if_match: &'static str, color: &'static str| {
        kt.http
            .put(kt.url("/api/v1/tenants/acme"))
            .bearer_auth(knowton_tests::ADMIN_TOKEN)
            .header("if-match", if_match)
            .json(&json!({"branding": {"primaryColor": color}}))
            .send()
    };
    let first = put("\"1\"", "#111111").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["etag"], "\"2\"");
    // Someone else's read of version 1 is now stale: 412, nothing changed.
    let stale = put("\"1\"", "#222222").await.unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let body: serde_json::Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "precondition_failed");
    let now = kt.admin(Method::GET, "/api/v1/tenants/acme", None).await;
    assert_eq!(now.body["branding"]["primaryColor"], "#111111");
    // `*` and no header apply to the current version; garbage is a 400.
    assert_eq!(put("*", "#333333").await.unwrap().status(), StatusCode::OK);
    // Ten writers that all read the same version: one wins, nine get 412.
    let version = kt.admin(Method::GET, "/api/v1/tenants/acme", None).await;
    let etag = version.header("etag").unwrap().to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (http, url, etag) = (
            kt.http.clone(),
            kt.url("/api/v1/tenants/acme"),
            etag.clone(),
        );
        tasks.spawn(async move {
            http.put(url)
                .bearer_auth(knowton_tests::ADMIN_TOKEN)
                .header("if-match", etag)
                .json(&json!({"branding": {"companyName": format!("Writer {i}")}}))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = tasks.join_all().await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((won, refused), (1, 9), "{statuses:?}");
    for bad in ["3", "W/\"3\"", "\"x\"", "\"99999999999999999999\""] {
        let reply = put(bad, "#444444").await.unwrap();
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

/// Every file under `dir`, by path.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}
