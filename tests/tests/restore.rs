//! Restores through the REST API, and scheduled backups, on both store
//! backends, with the tenants' databases on the test PostgreSQL server.

use std::time::Duration;

use knowton_tests::{Db, TestCoordinator, eventually_showing, on_every_backend, postgres_url};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_every_backend!(db:
    a_tenant_is_restored_to_a_date_after_a_safety_backup_and_verified,
    the_leader_backs_tenants_up_on_schedule,
    a_deprovisioned_tenants_files_are_restored_without_its_configuration,
    every_configuration_version_is_backed_up_and_an_earlier_one_restored,
    a_version_committed_while_the_repository_is_down_is_backed_up_when_it_is_back,
);

/// Starts a backup of `kind` and waits for it to succeed.
async fn back_up(kt: &TestCoordinator, slug: &str, kind: &str) -> Value {
    let started = kt
        .admin(
            Method::POST,
            &format!("/api/v1/tenants/{slug}/backups"),
            Some(json!({ "kind": kind })),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let listed = kt.finished_backup_run(slug).await;
    assert_eq!(listed["runs"][0]["status"], "succeeded", "{listed}");
    listed["runs"][0].clone()
}

/// Database and files backed up, changed, restored through the API to
/// the moment after the backups: exactly the earlier rows and files; a
/// safety backup of the replaced state first; a dry run changes nothing;
/// a moment before any backup is 404; verification names a damaged chunk.
async fn a_tenant_is_restored_to_a_date_after_a_safety_backup_and_verified(db: Db) {
    let Some(server) = postgres_url() else {
        eprintln!("TEST_DATABASE_URL is not set: restores of databases are not tested");
        return;
    };
    let kt = TestCoordinator::start_and(db, |args| {
        args.tenant_data.tenant_database_url = Some(server.clone());
    })
    .await;
    let slug = format!("rs-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let database = format!("tenant_{}", slug.replace('-', "_"));
    // Before the tenant, and so before any backup (its configuration's
    // first is taken as it is provisioned).
    let before_any = chrono::Utc::now();
    kt.provision(&slug, "basic").await;
    knowton_tests::as_tenant(
        &server,
        &database,
        "CREATE TABLE notes (id int PRIMARY KEY, body text); \
         INSERT INTO notes SELECT i, 'v1 ' || i FROM generate_series(1, 100) i;",
    )
    .await;
    let files = kt.db.dir.path().join("tenants").join(&slug);
    std::fs::write(files.join("a.txt"), "first version").unwrap();
    let earlier_rows = knowton_tests::db::notes(&server, &database).await;

    back_up(&kt, &slug, "database").await;
    back_up(&kt, &slug, "storage").await;
    let backed_up = chrono::Utc::now();

    knowton_tests::as_tenant(
        &server,
        &database,
        "UPDATE notes SET body = 'v2'; DELETE FROM notes WHERE id > 50;",
    )
    .await;
    std::fs::write(files.join("a.txt"), "second version").unwrap();
    std::fs::write(files.join("b.txt"), "added later").unwrap();

    let restore = |body: Value| {
        let kt = &kt;
        let slug = slug.clone();
        async move { kt.restore(&slug, body).await }
    };
    let dry = restore(json!({"at": backed_up, "dryRun": true})).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(
        dry.body["parts"].as_array().unwrap().len(),
        3,
        "{}",
        dry.body
    );
    assert_eq!(dry.body["parts"][0]["kind"], "database");
    assert_eq!(dry.body["parts"][1]["kind"], "storage");
    // The configuration as provisioned: version 1.
    assert_eq!(dry.body["parts"][2]["kind"], "configuration");
    assert_eq!(dry.body["parts"][2]["version"], 1);
    assert!(dry.body["parts"][0].get("safetyBackupId").is_none());
    assert_eq!(
        std::fs::read_to_string(files.join("a.txt")).unwrap(),
        "second version",
        "a dry run changes nothing"
    );

    let none = restore(json!({"at": before_any})).await;
    assert_eq!(
        none.error(StatusCode::NOT_FOUND).0,
        "no_backup",
        "{}",
        none.body
    );
    let done = restore(json!({"at": backed_up})).await;
    assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    assert_eq!(done.body["phase"], "done");
    assert_eq!(done.body["bytesDone"], done.body["bytesTotal"]);
    assert!(
        done.body["bytesTotal"].as_i64().unwrap() > 0,
        "{}",
        done.body
    );
    assert_eq!(
        knowton_tests::db::notes(&server, &database).await,
        earlier_rows
    );
    assert_eq!(
        std::fs::read_to_string(files.join("a.txt")).unwrap(),
        "first version"
    );
    assert!(!files.join("b.txt").exists(), "a file added since is gone");
    let safety = done.body["parts"][1]["safetyBackupId"]
        .as_str()
        .unwrap()
        .to_owned();

    // The safety backup holds the state the restore replaced.
    let listed = kt
        .admin(
            Method::GET,
            &format!("/api/v1/tenants/{slug}/backups"),
            None,
        )
        .await;
    let kinds: Vec<&str> = listed.body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        (
            kinds.iter().filter(|k| **k != "configuration").count(),
            kinds.iter().filter(|k| **k == "configuration").count()
        ),
        (4, 1),
        "two backups and two safety backups, and configuration version 1 \
         (unchanged by the restore): {}",
        listed.body
    );
    assert!(
        listed.body["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["backupId"] == safety.as_str()
                && r["actor"].as_str().unwrap().contains("before a restore")),
        "{}",
        listed.body
    );

    // Deep: the latest of each kind (the safety backups) restored into a
    // scratch database and directory and compared, then removed.
    let verified = kt
        .admin(
            Method::POST,
            &format!("/api/v1/tenants/{slug}/backups/verify?deep=true"),
            None,
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert_eq!(verified.body["ok"], true, "{}", verified.body);
    let deep: Vec<&Value> = verified.body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["deep"] == true && b["backup"]["kind"] != "configuration")
        .collect();
    assert_eq!(deep.len(), 2, "{}", verified.body);
    assert!(deep.iter().any(|b| b["backup"]["id"] == safety.as_str()));
    let leftovers: Vec<_> = std::fs::read_dir(kt.db.dir.path().join("tenants"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "scratch copies removed: {leftovers:?}"
    );
    let id = kt
        .admin(Method::GET, &format!("/api/v1/tenants/{slug}"), None)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .replace('-', "");
    let scratch: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(format!("knowton_verify_{id}"))
        .fetch_optional(&sqlx::PgPool::connect(&server).await.unwrap())
        .await
        .unwrap();
    assert_eq!(scratch, None, "the scratch database is dropped");

    // Damage every data pack of the tenant (its last chunk): verification
    // names them.
    let tenant_id = kt
        .admin(Method::GET, &format!("/api/v1/tenants/{slug}"), None)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let chunks = kt
        .db
        .dir
        .path()
        .join(format!("backups/tenants/{tenant_id}/packs/data"));
    let mut damaged = 0;
    for shard in std::fs::read_dir(&chunks).unwrap() {
        for chunk in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = chunk.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged >= 2);
    let verified = kt
        .admin(
            Method::POST,
            &format!("/api/v1/tenants/{slug}/backups/verify"),
            None,
        )
        .await;
    assert_eq!(verified.body["ok"], false, "{}", verified.body);
    let problems = verified.body["backups"][0]["problems"][0].as_str().unwrap();
    assert!(
        problems.contains("/packs/data/") && problems.contains("does not authenticate"),
        "{problems}"
    );
    // The failed verification is the tenant's backup alert, naming a chunk.
    let alert = kt.open_alerts(&slug, 1).await.remove(0);
    assert_eq!(
        (alert["check"].as_str(), alert["severity"].as_str()),
        (Some("backup"), Some("critical")),
        "{alert}"
    );
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("verification found ") && summary.contains("/packs/data/"),
        "{summary}"
    );
    // The restore starts (its plan reads only manifests) and fails at the
    // damaged chunk, before replacing anything, naming the part.
    let refused = restore(json!({"at": backed_up, "only": "storage"})).await;
    assert_eq!(refused.body["status"], "failed", "{}", refused.body);
    assert_eq!(
        refused.body["errorCode"], "restore_failed",
        "{}",
        refused.body
    );
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .starts_with("restoring the storage failed"),
        "{}",
        refused.body
    );
    assert!(
        refused.body["parts"][0]["safetyBackupId"].is_string(),
        "the safety backup to return to: {}",
        refused.body
    );
    assert_eq!(
        std::fs::read_to_string(files.join("a.txt")).unwrap(),
        "first version",
        "a refused restore changes nothing"
    );

    kt.purge(&slug).await;
    kt.stop().await;
}

/// With a schedule of every second, the leader backs a new tenant's files
/// up by itself, recorded as scheduled.
async fn the_leader_backs_tenants_up_on_schedule(db: Db) {
    let kt = TestCoordinator::start_and(db, |args| {
        args.backup.backup_storage_schedule = "* * * * * *".to_owned();
    })
    .await;
    kt.provision("sched", "basic").await;
    std::fs::write(
        kt.db.dir.path().join("tenants/sched/data.bin"),
        vec![1u8; 10_000],
    )
    .unwrap();
    let listed = eventually_showing(
        Duration::from_secs(30),
        "a scheduled backup succeeds",
        || async {
            let reply = kt
                .admin(Method::GET, "/api/v1/tenants/sched/backups", None)
                .await;
            let scheduled = reply.body["runs"].as_array().is_some_and(|runs| {
                runs.iter()
                    .any(|r| r["trigger"] == "schedule" && r["status"] == "succeeded")
            });
            if scheduled {
                Ok(reply.body)
            } else {
                Err(reply.body.to_string())
            }
        },
    )
    .await;
    let run = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["trigger"] == "schedule")
        .unwrap();
    assert_eq!(run["actor"], "schedule");
    assert_eq!(run["kind"], "storage");
    assert!(!listed["backups"].as_array().unwrap().is_empty());
    kt.stop().await;
}

/// The versions of `slug`'s configuration backups, newest first.
async fn config_backups(kt: &TestCoordinator, slug: &str) -> Result<Vec<i64>, String> {
    let reply = kt
        .admin(
            Method::GET,
            &format!("/api/v1/tenants/{slug}/backups?kind=configuration"),
            None,
        )
        .await;
    if reply.status != StatusCode::OK {
        return Err(reply.body.to_string());
    }
    Ok(reply.body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["kind"], "configuration", "{b}");
            b["version"].as_i64().unwrap()
        })
        .collect())
}

/// Waits until `slug`'s configuration backups are exactly versions
/// `1..=last`.
async fn until_backed_up(kt: &TestCoordinator, slug: &str, last: i64) {
    let wanted: Vec<i64> = (1..=last).rev().collect();
    eventually_showing(
        Duration::from_secs(20),
        &format!("configuration versions 1 to {last} of {slug} backed up"),
        || async {
            let versions = config_backups(kt, slug).await?;
            if versions == wanted {
                Ok(())
            } else {
                Err(format!("{versions:?}"))
            }
        },
    )
    .await;
}

async fn change(kt: &TestCoordinator, method: Method, path: &str, body: Option<Value>) {
    let reply = kt.admin(method, path, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
}

/// Branding, thresholds and plan changed several times: each version is
/// in the repository as it commits; restoring the configuration to a
/// moment between them gives back exactly that version's plan, branding
/// and thresholds, as a new version by the restore (after a dry run that
/// names the version and changes nothing), whose safety backup is the
/// version it replaced. Into another tenant, that tenant keeps its domain.
async fn every_configuration_version_is_backed_up_and_an_earlier_one_restored(db: Db) {
    let kt = TestCoordinator::start(db).await;
    kt.provision("cfg", "basic").await;
    kt.provision("cfg-copy", "basic").await;
    until_backed_up(&kt, "cfg", 1).await;

    change(
        &kt,
        Method::PUT,
        "/api/v1/tenants/cfg",
        Some(json!({"branding": {"primaryColor": "#111111"}})),
    )
    .await;
    until_backed_up(&kt, "cfg", 2).await;
    change(
        &kt,
        Method::PUT,
        "/api/v1/tenants/cfg/thresholds",
        Some(json!({"responseTimeMs": {"warning": 100.0, "critical": 200.0}})),
    )
    .await;
    until_backed_up(&kt, "cfg", 3).await;
    let at_v3 = chrono::Utc::now();

    change(
        &kt,
        Method::PUT,
        "/api/v1/tenants/cfg",
        Some(json!({"plan": "professional", "branding": {"primaryColor": "#222222"}})),
    )
    .await;
    change(&kt, Method::DELETE, "/api/v1/tenants/cfg/thresholds", None).await;
    until_backed_up(&kt, "cfg", 5).await;

    let restore = |body: Value| {
        let kt = &kt;
        async move {
            let reply = kt.restore("cfg", body).await;
            assert!(
                reply.status == StatusCode::OK || reply.body["status"] == "succeeded",
                "{}",
                reply.body
            );
            reply.body
        }
    };
    let dry = restore(json!({"at": at_v3, "only": "configuration", "dryRun": true})).await;
    assert_eq!(dry["parts"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["parts"][0]["kind"], "configuration");
    assert_eq!(dry["parts"][0]["version"], 3, "{dry}");
    let tenant = kt
        .admin(Method::GET, "/api/v1/tenants/cfg", None)
        .await
        .body;
    assert_eq!(tenant["configVersion"], 5, "a dry run changes nothing");

    let done = restore(json!({"at": at_v3, "only": "configuration"})).await;
    let safety = done["parts"][0]["safetyBackupId"]
        .as_str()
        .unwrap()
        .to_owned();
    let tenant = kt
        .admin(Method::GET, "/api/v1/tenants/cfg", None)
        .await
        .body;
    assert_eq!(tenant["plan"], "basic", "{tenant}");
    assert_eq!(tenant["branding"]["primaryColor"], "#111111", "{tenant}");
    let thresholds = kt
        .admin(Method::GET, "/api/v1/tenants/cfg/thresholds", None)
        .await
        .body;
    assert_eq!(thresholds["overridden"], true, "{thresholds}");
    assert_eq!(thresholds["thresholds"]["responseTimeMs"]["warning"], 100.0);

    let history = kt
        .admin(Method::GET, "/api/v1/tenants/cfg/config-history", None)
        .await
        .body;
    let versions = history["versions"].as_array().unwrap();
    let restored: Vec<&Value> = versions
        .iter()
        .filter(|v| v["version"].as_i64().unwrap() > 5)
        .collect();
    assert_eq!(
        restored.len(),
        2,
        "plan and branding, then thresholds: {history}"
    );
    for v in &restored {
        assert!(v["actor"].as_str().unwrap().ends_with("(restore)"), "{v}");
    }
    assert!(
        restored[0]["change"]
            .as_str()
            .unwrap()
            .contains("restored from version 3 of cfg"),
        "{}",
        restored[0]
    );
    // The restore's versions are backed up in turn; the safety backup is
    // version 5's.
    until_backed_up(&kt, "cfg", 7).await;
    let listed = kt
        .admin(
            Method::GET,
            "/api/v1/tenants/cfg/backups?kind=configuration",
            None,
        )
        .await
        .body;
    let safety_backup = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == safety.as_str())
        .unwrap_or_else(|| panic!("the safety backup {safety} is listed: {listed}"));
    assert_eq!(safety_backup["version"], 5);

    // Into another tenant: its configuration becomes version 3's, with
    // its own domain.
    let copy_domain = kt
        .admin(Method::GET, "/api/v1/tenants/cfg-copy", None)
        .await
        .body["domain"]
        .clone();
    let into = restore(json!({"at": at_v3, "only": "configuration", "into": "cfg-copy"})).await;
    assert_eq!(into["source"], "cfg", "{into}");
    let copy = kt
        .admin(Method::GET, "/api/v1/tenants/cfg-copy", None)
        .await
        .body;
    assert_eq!(copy["branding"]["primaryColor"], "#111111", "{copy}");
    assert_eq!(copy["domain"], copy_domain, "{copy}");
    let copy_thresholds = kt
        .admin(Method::GET, "/api/v1/tenants/cfg-copy/thresholds", None)
        .await
        .body;
    assert_eq!(
        copy_thresholds["thresholds"]["responseTimeMs"]["critical"],
        200.0
    );
    kt.stop().await;
}

/// Waits until `count` configuration versions are pending backup.
async fn until_pending(kt: &TestCoordinator, count: &str) {
    let pending =
        "SELECT CAST(count(*) AS TEXT) FROM tenant_config_history WHERE backed_up_at IS NULL";
    eventually_showing(
        Duration::from_secs(40),
        &format!("{count} versions pending"),
        || async {
            match kt.db.scalar(pending).await {
                Some(n) if n == count => Ok(()),
                other => Err(format!("{other:?} pending")),
            }
        },
    )
    .await;
}

/// A version committed while the repository cannot be written (its
/// directory replaced by a file) stays queued and is written once the
/// repository is back, with no new change to wake the worker; versions
/// written again (as after a crash between the write and its record) are
/// found there and not duplicated.
async fn a_version_committed_while_the_repository_is_down_is_backed_up_when_it_is_back(db: Db) {
    let kt = TestCoordinator::start(db).await;
    kt.provision("down", "basic").await;
    until_backed_up(&kt, "down", 1).await;

    let repository = kt.db.dir.path().join("backups");
    let away = kt.db.dir.path().join("backups.away");
    std::fs::rename(&repository, &away).unwrap();
    std::fs::write(&repository, "not a directory").unwrap();
    change(
        &kt,
        Method::PUT,
        "/api/v1/tenants/down",
        Some(json!({"branding": {"companyName": "Down While Changed"}})),
    )
    .await;
    // Version 1's backup is recorded; version 2's cannot be written.
    until_pending(&kt, "1").await;
    assert!(
        config_backups(&kt, "down").await.is_err(),
        "the repository is unreachable"
    );

    std::fs::remove_file(&repository).unwrap();
    std::fs::rename(&away, &repository).unwrap();
    until_backed_up(&kt, "down", 2).await;
    until_pending(&kt, "0").await;

    // As if the coordinator died after writing each backup but before
    // recording it: every version is written again, found there, and
    // listed once.
    kt.db
        .execute("UPDATE tenant_config_history SET backed_up_at = NULL")
        .await;
    change(
        &kt,
        Method::PUT,
        "/api/v1/tenants/down",
        Some(json!({"branding": {"primaryColor": "#333333"}})),
    )
    .await;
    until_backed_up(&kt, "down", 3).await;
    until_pending(&kt, "0").await;
    assert_eq!(config_backups(&kt, "down").await.unwrap(), [3, 2, 1]);
    kt.stop().await;
}

/// A deprovisioned tenant (data kept) restored to a moment: its files come
/// back; its configuration is left out of the restore (the lifecycle
/// changes only an active tenant's), and the dry run says so first.
async fn a_deprovisioned_tenants_files_are_restored_without_its_configuration(db: Db) {
    let kt = TestCoordinator::start(db).await;
    kt.provision("gone", "basic").await;
    let files = kt.db.dir.path().join("tenants/gone");
    std::fs::write(files.join("kept.txt"), "as backed up").unwrap();
    back_up(&kt, "gone", "storage").await;
    let backed_up = chrono::Utc::now();
    std::fs::write(files.join("kept.txt"), "changed").unwrap();
    let stopped = kt.admin(Method::DELETE, "/api/v1/tenants/gone", None).await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.body);

    let dry = kt
        .restore("gone", json!({"at": backed_up, "dryRun": true}))
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    let kinds: Vec<&str> = dry.body["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["storage"], "{}", dry.body);
    let unchanged: Vec<(&str, &str)> = dry.body["unchanged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["kind"].as_str().unwrap(), u["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(unchanged.len(), 2, "{}", dry.body);
    assert_eq!(unchanged[0].0, "database");
    assert!(
        unchanged[0].1.starts_with("no backup of it at or before "),
        "{}",
        dry.body
    );
    assert_eq!(unchanged[1].0, "configuration");
    assert!(
        unchanged[1].1.contains("gone is not active"),
        "{}",
        dry.body
    );

    let done = kt.restore("gone", json!({"at": backed_up})).await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    assert_eq!(
        std::fs::read_to_string(files.join("kept.txt")).unwrap(),
        "as backed up"
    );
    let tenant = kt.admin(Method::GET, "/api/v1/tenants/gone", None).await;
    assert_eq!(tenant.body["status"], "deprovisioned", "{}", tenant.body);
    kt.stop().await;
}
