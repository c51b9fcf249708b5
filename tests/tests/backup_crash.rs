//! The coordinator binary killed with SIGKILL in the middle of a database
//! and of a file backup (some chunks written, no manifest yet): no backup
//! is listed, the run is recorded as interrupted once it falls silent, the
//! next run succeeds and verifies, and pruning then leaves exactly the
//! chunks the kept backup references. On SQLite and PostgreSQL.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use knowton_coordinator::backup::retention::Retention;
use knowton_coordinator::backup::{BackupKind, Backups, open_repository};
use knowton_coordinator::certs;
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::tenant_data::TenantData;
use knowton_tests::agent::free_port;
use knowton_tests::process::{CoordinatorProcess, get_json};
use knowton_tests::{ADMIN_TOKEN, Db, TestDb, eventually, on_every_backend, postgres_url};
use serde_json::{Value, json};
use uuid::Uuid;

on_every_backend!(db:
    a_file_backup_killed_midway_leaves_no_backup_and_the_next_succeeds,
    a_database_backup_killed_midway_leaves_no_backup_and_the_next_succeeds,
);

/// The key `CoordinatorProcess` serves with (`*` 32 times).
const PROCESS_KEY: [u8; 32] = [b'*'; 32];

async fn a_file_backup_killed_midway_leaves_no_backup_and_the_next_succeeds(kind: Db) {
    killed_midway(kind, BackupKind::Storage).await;
}

async fn a_database_backup_killed_midway_leaves_no_backup_and_the_next_succeeds(kind: Db) {
    killed_midway(kind, BackupKind::Database).await;
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }
}

fn serve(db: &TestDb, extra: &[String]) -> CoordinatorProcess {
    serve_with_tools(None, db, extra)
}

fn serve_with_tools(tools: Option<&Path>, db: &TestDb, extra: &[String]) -> CoordinatorProcess {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    CoordinatorProcess::serve_with_tools(
        tools,
        (db.dir.path(), &db.url),
        &db.dir.path().join("tls"),
        (free_port(), free_port()),
        "http://127.0.0.1:9/hook",
        &extra,
    )
}

/// Writes into `dir` a `pg_dump` that passes on the first `bytes` of the
/// real one's output, then holds its output open without a word until its
/// parent (the coordinator) is gone.
fn write_stalling_pg_dump(dir: &Path, bytes: usize) {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var("PATH").unwrap_or_default();
    let script = dir.join("pg_dump");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             PATH='{path}' pg_dump \"$@\" | head -c {bytes}\n\
             exec tail --pid=\"$PPID\" -f /dev/null\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether any data pack of `tenant` is in the repository at `repo`.
fn has_chunks(repo: &Path, tenant: &str) -> bool {
    let dir = repo.join(format!("tenants/{tenant}/packs/data"));
    std::fs::read_dir(dir).is_ok_and(|shards| {
        shards.flatten().any(|shard| {
            std::fs::read_dir(shard.path()).is_ok_and(|mut objects| objects.next().is_some())
        })
    })
}

async fn killed_midway(kind: Db, backup: BackupKind) {
    let server = match (backup, postgres_url()) {
        (BackupKind::Database, None) => {
            eprintln!("TEST_DATABASE_URL is not set: database backups are not tested");
            return;
        }
        (_, server) => server,
    };
    let db = TestDb::new(kind).await;
    certs::init(&db.dir.path().join("tls"), &[], false).unwrap();
    let repo = db.dir.path().join("backups");
    let files = db.dir.path().join("tenants");
    let mut extra = vec![
        "--no-cluster".to_owned(),
        "--backup-url".to_owned(),
        format!("file://{}", repo.display()),
        "--tenant-storage-dir".to_owned(),
        files.display().to_string(),
    ];
    if let (BackupKind::Database, Some(server)) = (backup, &server) {
        extra.extend(["--tenant-database-url".to_owned(), server.clone()]);
    }
    let http = knowton_coordinator::client::http_client();
    // The first coordinator's `pg_dump` stalls after its first 48 MiB, so
    // the kill lands mid-backup however fast the machine (a file backup's
    // 40 MiB leave it a second or more of work past its first pack).
    let tools = db.dir.path().join("stalling-tools");
    std::fs::create_dir(&tools).unwrap();
    write_stalling_pg_dump(&tools, 48 << 20);
    let first = serve_with_tools(Some(&tools), &db, &extra);
    let api = Api {
        http: http.clone(),
        base: first.base.clone(),
    };
    let slug = format!("kill-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let (status, created) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/tenants",
            Some(knowton_tests::tenant_request(&slug, "basic")),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let tenant = created["tenant"]["id"]
        .as_str()
        .or(created["id"].as_str())
        .expect("the tenant's id")
        .to_owned();

    // Enough data that the backup is still running when its first pack
    // (16 MiB) lands: 40 MiB that does not compress, or a 62 MB dump of
    // hexadecimal digits (about half of it once compressed).
    match (backup, &server) {
        (BackupKind::Storage, _) => {
            use std::io::Read;
            let dir = files.join(&slug);
            let mut random = std::fs::File::open("/dev/urandom").unwrap();
            for i in 0..10 {
                let mut bytes = vec![0; 4 * 1024 * 1024];
                random.read_exact(&mut bytes).unwrap();
                std::fs::write(dir.join(format!("f{i:02}.bin")), bytes).unwrap();
            }
        }
        (BackupKind::Database, Some(server)) => {
            let database = format!("tenant_{}", slug.replace('-', "_"));
            knowton_tests::as_tenant(
                server,
                &database,
                "CREATE TABLE big AS SELECT i, \
                 (SELECT string_agg(md5((i::bigint * 16 + j)::text), '') \
                  FROM generate_series(0, 12) j) AS body \
                 FROM generate_series(1, 150000) i;",
            )
            .await;
        }
        (BackupKind::Database, None) | (BackupKind::Configuration, _) => unreachable!(),
    }

    let backups_path = format!("/api/v1/tenants/{slug}/backups");
    let kind_name = backup.as_str();
    let listing = format!("{backups_path}?kind={kind_name}");
    let (status, started) = api
        .send(
            reqwest::Method::POST,
            &backups_path,
            Some(json!({ "kind": kind_name })),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    eventually(
        Duration::from_secs(60),
        "the backup's first pack",
        || async { has_chunks(&repo, &tenant).then_some(()) },
    )
    .await;
    first.kill();
    let manifests = repo.join(format!("tenants/{tenant}/backups/{kind_name}"));
    assert!(
        std::fs::read_dir(&manifests).map_or(true, |mut d| d.next().is_none()),
        "killed before its manifest: no backup"
    );

    let second = serve(&db, &extra);
    let api = Api {
        http,
        base: second.base.clone(),
    };
    let listed = get_json(&api.http, &api.base, &listing).await;
    assert_eq!(listed["backups"], json!([]), "{listed}");
    // The killed run holds its kind until it has been silent long enough
    // to be known as interrupted; then the next one starts.
    let next = eventually(Duration::from_secs(90), "a new backup starts", || async {
        let (status, body) = api
            .send(
                reqwest::Method::POST,
                &backups_path,
                Some(json!({ "kind": kind_name })),
            )
            .await;
        match status {
            202 => Some(body),
            409 => None,
            other => panic!("{other}: {body}"),
        }
    })
    .await;
    let finished = eventually(
        Duration::from_secs(60),
        "the new backup finishes",
        || async {
            let listed = get_json(&api.http, &api.base, &backups_path).await;
            let run = listed["runs"]
                .as_array()?
                .iter()
                .find(|r| r["id"] == next["id"])?
                .clone();
            (run["status"] != "running").then_some(listed)
        },
    )
    .await;
    // The schedule (never backed up: due at once) may have taken one of
    // its own meanwhile; the runs asked for are the killed one and ours.
    let runs: Vec<&Value> = finished["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "manual")
        .collect();
    assert_eq!(runs.len(), 2, "{finished}");
    assert_eq!(runs[0]["status"], "succeeded", "{finished}");
    assert_eq!(runs[1]["status"], "failed", "{finished}");
    assert!(
        runs[1]["error"].as_str().unwrap().contains("interrupted"),
        "{finished}"
    );
    assert!(
        finished["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == runs[0]["backupId"]),
        "{finished}"
    );
    let (status, verified) = api
        .send(
            reqwest::Method::POST,
            &format!("{backups_path}/verify"),
            None,
        )
        .await;
    assert_eq!((status, &verified["ok"]), (200, &json!(true)), "{verified}");
    second.terminate();

    // Pruned (marked, then swept with no grace): exactly the chunks the
    // kept backup references remain, and it still verifies.
    let backups = Backups::new(
        open_repository(
            &format!("file://{}", repo.display()),
            None,
            &SecretBox::from_key(&PROCESS_KEY),
        )
        .unwrap(),
        TenantData {
            databases: None,
            storage: None,
        },
    );
    let tenant: Uuid = tenant.parse().unwrap();
    let retention: Retention = "daily=7".parse().unwrap();
    for _ in 0..2 {
        backups
            .prune(tenant, retention, Duration::ZERO)
            .await
            .unwrap();
    }
    let kept = backups.manifests(tenant, backup).await.unwrap();
    assert_eq!(kept.len(), 1, "the newest of the day");
    // Of every kind: the schedule may have backed up the other kind of
    // data meanwhile (CI saw a storage backup's listing chunk here).
    let mut referenced = HashSet::new();
    for &kind in BackupKind::ALL {
        for manifest in backups.manifests(tenant, kind).await.unwrap() {
            referenced.extend(manifest.content.chunks().map(|c| c.id.clone()));
        }
    }
    let present = backups.repository().chunk_ids(tenant).await.unwrap();
    assert_eq!(
        present, referenced,
        "no orphan left, nothing referenced deleted"
    );
    assert!(backups.verify(&kept[0]).await.is_empty());

    if backup == BackupKind::Database {
        let third = serve(&db, &extra);
        let (status, body) = Api {
            http: knowton_coordinator::client::http_client(),
            base: third.base.clone(),
        }
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenants/{slug}?purge=true"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        third.terminate();
    }
}
