//! Restores through the REST API, and scheduled backups, on both store
//! backends, with the tenants' databases on the test PostgreSQL server.

use std::time::Duration;

use knowton_tests::{Db, TestCoordinator, eventually_showing, on_every_backend, postgres_url};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_every_backend!(db:
    a_tenant_is_restored_to_a_date_after_a_safety_backup_and_verified,
    the_leader_backs_tenants_up_on_schedule,
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

async fn notes(server: &str, database: &str) -> Vec<(i32, String)> {
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&format!("/{database}"));
    let pool = sqlx::PgPool::connect(url.as_str()).await.unwrap();
    let rows = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

async fn on_tenant_db(server: &str, database: &str, sql: &str) {
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&format!("/{database}"));
    let pool = sqlx::PgPool::connect(url.as_str()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET ROLE \"{database}\"; {sql}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
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
    kt.provision(&slug, "basic").await;
    let before_any = chrono::Utc::now();
    on_tenant_db(
        &server,
        &database,
        "CREATE TABLE notes (id int PRIMARY KEY, body text); \
         INSERT INTO notes SELECT i, 'v1 ' || i FROM generate_series(1, 100) i;",
    )
    .await;
    let files = kt.db.dir.path().join("tenants").join(&slug);
    std::fs::write(files.join("a.txt"), "first version").unwrap();
    let earlier_rows = notes(&server, &database).await;

    back_up(&kt, &slug, "database").await;
    back_up(&kt, &slug, "storage").await;
    let backed_up = chrono::Utc::now();

    on_tenant_db(
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
        async move {
            kt.admin(
                Method::POST,
                &format!("/api/v1/tenants/{slug}/restore"),
                Some(body),
            )
            .await
        }
    };
    let dry = restore(json!({"at": backed_up, "dryRun": true})).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(
        dry.body["parts"].as_array().unwrap().len(),
        2,
        "{}",
        dry.body
    );
    assert_eq!(dry.body["parts"][0]["kind"], "database");
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
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(notes(&server, &database).await, earlier_rows);
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
    assert_eq!(
        listed.body["backups"].as_array().unwrap().len(),
        4,
        "{}",
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
        .filter(|b| b["deep"] == true)
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

    // Damage every chunk of the tenant: verification names them.
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
        .join(format!("backups/tenants/{tenant_id}/chunks"));
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
        problems.contains("/chunks/") && problems.contains("does not authenticate"),
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
        summary.starts_with("verification found ") && summary.contains("/chunks/"),
        "{summary}"
    );
    let refused = restore(json!({"at": backed_up, "only": "storage"})).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.body);
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
