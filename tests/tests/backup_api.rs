//! Backups through the REST API, on both store backends: a run started on
//! demand, recorded, listed with its backup; who may do it.

use std::time::Duration;

use knowton_tests::{TestCoordinator, eventually_showing, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_every_backend!(
    a_tenants_files_are_backed_up_on_demand_and_listed,
    only_the_admin_and_the_tenants_production_key_reach_its_backups,
    a_backup_that_cannot_run_is_recorded_as_failed_with_its_reason,
    failing_backups_raise_the_backup_alert_until_one_succeeds,
    a_verification_names_the_first_problems_and_counts_them_all,
);

async fn a_tenants_files_are_backed_up_on_demand_and_listed(kt: TestCoordinator) {
    kt.provision("files", "basic").await;
    let dir = kt.db.dir.path().join("tenants/files");
    std::fs::write(dir.join("report.pdf"), vec![7u8; 300 * 1024]).unwrap();

    let started = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/files/backups",
            Some(json!({"kind": "storage"})),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert_eq!(started.body["status"], "running");
    assert_eq!(started.body["kind"], "storage");
    assert_eq!(started.body["trigger"], "manual");
    assert_eq!(started.body["actor"], "admin");

    let listed = kt.finished_backup_run("files").await;
    let run = &listed["runs"][0];
    assert_eq!(run["status"], "succeeded", "{listed}");
    assert_eq!(run["id"], started.body["id"]);
    assert!(run["bytesRead"].as_i64().unwrap() >= 300 * 1024, "{run}");
    // Besides its configuration, backed up as it was committed.
    let backups: Vec<&Value> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] != "configuration")
        .collect();
    assert_eq!(backups.len(), 1, "{listed}");
    assert_eq!(backups[0]["id"], run["backupId"]);
    assert_eq!(backups[0]["kind"], "storage");
    assert_eq!(backups[0]["size"], 300 * 1024);

    // Its age is a metric (the run refreshed it), valid for promtool.
    let started_at = chrono::DateTime::parse_from_rfc3339(run["startedAt"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let line = format!(
        "knowton_backup_last_success_timestamp_seconds{{tenant=\"files\",kind=\"storage\"}} {started_at}"
    );
    let scraped = eventually_showing(Duration::from_secs(10), "the backup's metric", || async {
        let scraped = kt.scrape().await;
        if scraped.contains(&line) {
            Ok(scraped)
        } else {
            Err(scraped)
        }
    })
    .await;
    let (valid, report) = knowton_tests::promtool::promtool(&scraped);
    assert!(valid, "{report}");

    // Paged: a second backup, one per page.
    kt.admin(
        Method::POST,
        "/api/v1/tenants/files/backups",
        Some(json!({"kind": "storage"})),
    )
    .await;
    eventually_showing(Duration::from_secs(30), "two backups", || async {
        let reply = kt
            .admin(
                Method::GET,
                "/api/v1/tenants/files/backups?kind=storage",
                None,
            )
            .await;
        match reply.body["backups"].as_array().map(Vec::len) {
            Some(2) => Ok(()),
            _ => Err(reply.body.to_string()),
        }
    })
    .await;
    let first = kt
        .admin(
            Method::GET,
            "/api/v1/tenants/files/backups?kind=storage&limit=1",
            None,
        )
        .await;
    let cursor = first.body["nextCursor"].as_str().unwrap().to_owned();
    let second = kt
        .admin(
            Method::GET,
            &format!("/api/v1/tenants/files/backups?kind=storage&limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second.body["backups"].as_array().unwrap().len(), 1);
    assert_ne!(
        second.body["backups"][0]["id"],
        first.body["backups"][0]["id"]
    );
    assert!(second.body.get("nextCursor").is_none(), "{}", second.body);

    for (query, field) in [
        ("limit=0", "limit"),
        ("cursor=nope", "cursor"),
        ("kind=tape", "kind"),
    ] {
        let reply = kt
            .admin(
                Method::GET,
                &format!("/api/v1/tenants/files/backups?{query}"),
                None,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.body
        );
        let _ = field;
    }
    let bad = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/files/backups",
            Some(json!({"kind": "everything"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    // Configuration versions are backed up as they are committed.
    let configuration = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/files/backups",
            Some(json!({"kind": "configuration"})),
        )
        .await;
    assert_eq!(
        configuration.error(StatusCode::BAD_REQUEST),
        ("invalid_field".to_owned(), "kind".to_owned()),
    );
}

async fn only_the_admin_and_the_tenants_production_key_reach_its_backups(kt: TestCoordinator) {
    let a = kt.provision("tenant-a", "basic").await;
    kt.provision("tenant-b", "basic").await;
    let production = a["apiKeys"]["production"].as_str().unwrap();
    let development = a["apiKeys"]["development"].as_str().unwrap();

    let own = kt
        .call(
            Method::POST,
            "/api/v1/tenants/tenant-a/backups",
            Some(production),
            Some(json!({"kind": "storage"})),
        )
        .await;
    assert_eq!(own.status, StatusCode::ACCEPTED, "{}", own.body);
    assert!(
        own.body["actor"]
            .as_str()
            .unwrap()
            .starts_with("tenant-key:")
    );
    let listed = kt
        .call(
            Method::GET,
            "/api/v1/tenants/tenant-a/backups",
            Some(production),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    // A tenant key starts one of each kind every 10 minutes; the admin any.
    let again = kt
        .call(
            Method::POST,
            "/api/v1/tenants/tenant-a/backups",
            Some(production),
            Some(json!({"kind": "storage"})),
        )
        .await;
    assert_eq!(
        again.error(StatusCode::TOO_MANY_REQUESTS).0,
        "backup_too_soon"
    );
    let verify = kt
        .call(
            Method::POST,
            "/api/v1/tenants/tenant-a/backups/verify",
            Some(production),
            None,
        )
        .await;
    assert_eq!(verify.error(StatusCode::FORBIDDEN).0, "admin_required");

    for (method, path, key, code) in [
        (
            Method::GET,
            "/api/v1/tenants/tenant-b/backups",
            production,
            "forbidden",
        ),
        (
            Method::POST,
            "/api/v1/tenants/tenant-b/backups",
            production,
            "forbidden",
        ),
        (
            Method::GET,
            "/api/v1/tenants/tenant-a/backups",
            development,
            "production_key_required",
        ),
        (
            Method::POST,
            "/api/v1/tenants/tenant-a/backups",
            development,
            "production_key_required",
        ),
    ] {
        let reply = kt
            .call(
                method.clone(),
                path,
                Some(key),
                Some(json!({"kind": "storage"})),
            )
            .await;
        assert_eq!(
            reply.error(StatusCode::FORBIDDEN).0,
            code,
            "{method} {path}"
        );
    }
    let b = kt
        .admin(Method::GET, "/api/v1/tenants/tenant-b/backups", None)
        .await;
    assert!(b.body["runs"].as_array().unwrap().is_empty(), "{}", b.body);
}

async fn a_backup_that_cannot_run_is_recorded_as_failed_with_its_reason(kt: TestCoordinator) {
    kt.provision("nodb", "basic").await;
    let started = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/nodb/backups",
            Some(json!({"kind": "database"})),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let listed = kt.finished_backup_run("nodb").await;
    let run = &listed["runs"][0];
    assert_eq!(run["status"], "failed", "{listed}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("no --tenant-database-url"),
        "{run}"
    );
    assert!(
        listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["kind"] == "configuration"),
        "{listed}"
    );
}

/// A tenant's file backup fails on every try (its directory is gone):
/// after as many failures in a row as a scheduled round tries, the
/// tenant's `backup` alert fires naming the error; a backup that
/// succeeds again resolves it.
async fn failing_backups_raise_the_backup_alert_until_one_succeeds(kt: TestCoordinator) {
    kt.provision("fails", "basic").await;
    let files = kt.db.dir.path().join("tenants/fails");
    std::fs::remove_dir_all(&files).unwrap();
    let mut alerted = None;
    for attempt in 1..=4 {
        let started = kt
            .admin(
                Method::POST,
                "/api/v1/tenants/fails/backups",
                Some(json!({"kind": "storage"})),
            )
            .await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        let listed = kt.finished_backup_run("fails").await;
        assert_eq!(listed["runs"][0]["status"], "failed", "{listed}");
        assert_eq!(listed["runs"].as_array().unwrap().len(), attempt);
        if attempt == 3 {
            // Still being retried: no alert yet.
            let open = kt.open_alerts("fails", 0).await;
            assert!(open.is_empty());
        }
        if attempt == 4 {
            alerted = Some(kt.open_alerts("fails", 1).await.remove(0));
        }
    }
    let alert = alerted.unwrap();
    assert_eq!(alert["check"], "backup", "{alert}");
    assert_eq!(alert["severity"], "critical", "{alert}");
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("storage backup failed 4 times in a row: "),
        "{summary}"
    );

    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("back.txt"), "again").unwrap();
    kt.admin(
        Method::POST,
        "/api/v1/tenants/fails/backups",
        Some(json!({"kind": "storage"})),
    )
    .await;
    let listed = kt.finished_backup_run("fails").await;
    assert_eq!(listed["runs"][0]["status"], "succeeded", "{listed}");
    // Resolved after two evaluations in range: the one the success wakes,
    // and the next sweep's (seconds apart; a loaded machine takes longer).
    let id = alert["id"].as_str().unwrap();
    eventually_showing(
        Duration::from_secs(60),
        "the backup alert resolves",
        || async {
            let alert = kt.alert(id).await;
            if alert["state"] == "resolved" {
                Ok(())
            } else {
                Err(alert.to_string())
            }
        },
    )
    .await;
}

/// A backup whose every pack is gone has a problem per chunk: the reply
/// names the first 100 and counts them all, and so does the recorded
/// verification (its first 20).
async fn a_verification_names_the_first_problems_and_counts_them_all(kt: TestCoordinator) {
    kt.provision("many", "basic").await;
    let dir = kt.db.dir.path().join("tenants/many");
    for i in 0..150 {
        std::fs::write(dir.join(format!("f{i}")), format!("file number {i}")).unwrap();
    }
    kt.admin(
        Method::POST,
        "/api/v1/tenants/many/backups",
        Some(json!({"kind": "storage"})),
    )
    .await;
    let listed = kt.finished_backup_run("many").await;
    assert_eq!(listed["runs"][0]["status"], "succeeded", "{listed}");
    let id = kt
        .admin(Method::GET, "/api/v1/tenants/many", None)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let packs = kt.db.dir.path().join(format!("backups/tenants/{id}/packs"));
    std::fs::remove_dir_all(packs.join("data")).unwrap();

    let verified = kt
        .admin(Method::POST, "/api/v1/tenants/many/backups/verify", None)
        .await;
    let storage = verified.body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backup"]["kind"] == "storage")
        .unwrap_or_else(|| panic!("{}", verified.body))
        .clone();
    assert_eq!(storage["ok"], false);
    assert_eq!(
        storage["problems"].as_array().unwrap().len(),
        100,
        "{storage}"
    );
    let total = storage["problemsTotal"].as_u64().unwrap();
    assert!(total >= 150, "a problem per file's chunk at least: {total}");

    // Its listing gone too: the storage backups cannot even be listed,
    // which the verification names (a problem, not a failure to verify).
    std::fs::remove_dir_all(packs.join("meta")).unwrap();
    let verified = kt
        .admin(Method::POST, "/api/v1/tenants/many/backups/verify", None)
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert_eq!(verified.body["ok"], false);
    let unreadable = verified.body["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{}", verified.body);
    let named = unreadable[0].as_str().unwrap();
    assert!(
        named.starts_with("storage backups: ") && named.contains("not found"),
        "{named}"
    );
}
